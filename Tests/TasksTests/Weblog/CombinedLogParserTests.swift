import Broker
import ETLSupport
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

@Suite("Combined log format parser", .timeLimit(.minutes(10)))
struct CombinedLogParserTests {
    func parse(_ s: String) throws(WeblogRejection) -> WeblogRecord { try CombinedLogParser.parse(Array(s.utf8)) }

    @Test("the Apache documentation's example line")
    func apacheExample() throws {
        let r = try parse(
            #"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 "#
                + #"2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""# + "\n")
        #expect(r.clientIP == "127.0.0.1")
        #expect(r.ident == nil)
        #expect(r.user == "frank")
        #expect(r.timestamp == 971_211_336)  // 2000-10-10 20:55:36 UTC
        #expect(r.method == "GET" && r.path == "/apache_pb.gif" && r.protocolVersion == "HTTP/1.0")
        #expect(r.status == 200 && r.bytes == 2326)
        #expect(r.referer == "http://www.example.com/start.html")
        #expect(r.userAgent == "Mozilla/4.08 [en] (Win98; I ;Nav)")
    }

    @Test("escaped quotes, '-' fields, IPv6, a request that is not METHOD PATH PROTOCOL, non-UTF-8 bytes")
    func edgeCases() throws {
        let esc = try parse(
            #"2001:db8::1 - - [01/Jan/2024:00:00:00 +0000] "POST /login HTTP/1.1" 302 - "-" "Agent \"quoted\" \\ end""#)
        #expect(esc.clientIP == "2001:db8::1")
        #expect(esc.user == nil && esc.bytes == nil && esc.referer == nil)
        #expect(esc.userAgent == #"Agent "quoted" \ end"#)
        #expect(esc.timestamp == 1_704_067_200)
        let dash = try parse(#"10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "-" 408 0 "-" "-""#)
        #expect(dash.method == nil && dash.rawRequest == nil && dash.userAgent == nil)
        let odd = try parse(#"10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "\x16\x03\x01" 400 0 "-" "-""#)
        #expect(odd.rawRequest == #"\x16\x03\x01"#)
        var bytes = Array(#"10.0.0.1 - bob [29/Feb/2024:23:59:59 +0130] "GET / HTTP/1.1" 200 5 "-" "Caf"#.utf8)
        bytes += [0xE9, 0xFF] + Array(#"""#.utf8)
        let latin = try CombinedLogParser.parse(bytes)
        #expect(latin.userAgent == "Caf\u{FFFD}\u{FFFD}")
        #expect(latin.timestamp == 1_709_251_199 - 5400)
    }

    @Test(
        "each malformed line is rejected with a reason that names the field",
        arguments: [
            ("", "empty line"),
            ("garbage", "bad client IP \"garbage\""),
            ("999.1.1.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"", "bad client IP"),
            ("10.0.0.1 - - 01/Jan/2024:00:00:00 +0000 \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"", "missing [timestamp]"),
            (
                "10.0.0.1 - - [32/Foo/2024:25:61:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
                "bad timestamp \"32/Foo/2024:25:61:00 +0000\""
            ),
            ("10.0.0.1 - - [30/Feb/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"", "bad timestamp"),
            (
                "10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] GET / HTTP/1.1 200 1 \"-\" \"-\"",
                "request should be in double quotes"
            ),
            ("10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 2000 1 \"-\" \"-\"", "bad status \"2000\""),
            (
                "10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 -5 \"-\" \"-\"",
                "bad byte count \"-5\""
            ),
            (
                "10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"Mozilla/5.0 (trunc",
                "user agent opens a quote that never closes"
            ),
            (
                "10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\"",
                "user agent should be in double quotes, found end of line"
            ),
            (
                "10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" extra",
                "unexpected text after the user agent"
            ),
        ])
    func rejections(line: String, reason: String) {
        let e = #expect(throws: WeblogRejection.self) { try parse(line) }
        #expect(e?.reason.contains(reason) == true, "got: \(e?.reason ?? "no error")")
    }

    @Test("a line of several megabytes is rejected by its length, unparsed")
    func hugeLine() {
        let line = [UInt8](repeating: 65, count: 3 * 1024 * 1024)
        let e = #expect(throws: WeblogRejection.self) { try CombinedLogParser.parse(line) }
        #expect(e?.reason == "line too long: 3145728 bytes, the limit is 65536")
    }
}
