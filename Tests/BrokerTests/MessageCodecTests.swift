import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

@Suite("Signed task messages", .timeLimit(.minutes(10)))
struct MessageCodecTests {
    let codec = try! MessageCodec(secret: "a-test-secret-that-is-long-enough")
    let message = TaskMessage(
        dag: "b2b", runID: 7, task: "load_company", logicalDate: "2024-05-01", tryNumber: 2,
        queue: "default", timeoutSeconds: 300, arguments: ["file": "company.csv"])

    @Test("a signed message round-trips")
    func roundTrip() throws {
        let (body, sig) = try codec.encode(message)
        #expect(sig.count == 64)
        #expect(try codec.decode(body: body, signature: sig) == message)
    }

    @Test("the hand-written JSON agrees with Foundation's both ways, escapes and Unicode included")
    func flatJSONAgreesWithFoundation() throws {
        let odd = "quote \" backslash \\ slash / tab \t newline \n bell \u{7} é 日本 🚀 \u{0}"
        let messages = [
            message,
            TaskMessage(
                id: odd, dag: odd, runID: Int64(Int32.max) * 4, task: "t", logicalDate: "2024-05-01T00:00:00+00:00",
                tryNumber: 0,
                queue: "q", timeoutSeconds: 0.25, enqueuedAt: 1_764_040_000.123456,
                arguments: [odd: odd, "": "", "b": "2"]),
        ]
        for m in messages {
            // Ours read by Foundation, and Foundation's read by ours.
            #expect(try JSONDecoder().decode(TaskMessage.self, from: Data(m.json)) == m)
            #expect(TaskMessage(flat: Array(try JSONEncoder().encode(m))) == m)
            #expect(TaskMessage(flat: m.json) == m)
        }
        let event = CompletionEvent(
            dag: odd, runID: 12, task: "n1", tryNumber: 3, state: "success", worker: "w/0", finishedAt: 1_764_040_000.5)
        #expect(try JSONDecoder().decode(CompletionEvent.self, from: Data(event.json)) == event)
        #expect(CompletionEvent(flat: Array(try JSONEncoder().encode(event))) == event)
        // A batch's events of one run and state travel as one, listing their tasks.
        let batch = CompletionEvent.merged([
            event, CompletionEvent(dag: odd, runID: 12, task: "n2", tryNumber: 1, state: "success", worker: "w/0"),
            CompletionEvent(dag: odd, runID: 12, task: "n3", tryNumber: 1, state: "failed", worker: "w/0"),
            CompletionEvent(dag: odd, runID: 13, task: "n4", tryNumber: 1, state: "success", worker: "w/0"),
        ])
        #expect(batch.map(\.allTasks) == [["n1", "n2"], ["n3"], ["n4"]])
        #expect(try JSONDecoder().decode(CompletionEvent.self, from: Data(batch[0].json)) == batch[0])
        #expect(CompletionEvent(flat: batch[0].json) == batch[0])
        #expect(CompletionEvent(flat: Array(try JSONEncoder().encode(batch[0]))) == batch[0])
        // Escaped forms Foundation may write, a surrogate pair, whitespace: read the same.
        let escaped = Array(
            (#" { "dag" : "a\u00e9\ud83d\ude80\/" ,"#
                + #" "runID":1,"task":"t","tryNumber":1,"state":"s","worker":"w","finishedAt":1.5e0 } "#).utf8)
        #expect(CompletionEvent(flat: escaped)?.dag == "aé🚀/")
        // Not the shape, or not JSON: nil, and the caller falls back to Foundation.
        for bad in [
            #"{"a":[1]}"#, #"{"a":"x""#, #"{"a":"\q"}"#, #"{"a":"\ud83d"}"#, "[]", #"{"a":{"b":{}}}"#, #"{"a":1} x"#,
        ] {
            #expect(FlatJSON.parse(Array(bad.utf8)) == nil, "\(bad)")
        }
        // The shape, with a field of the wrong type: parsed, but no event.
        #expect(FlatJSON.parse(Array(#"{"dag":1}"#.utf8)) != nil)
        #expect(
            CompletionEvent(
                flat: Array(
                    #"{"dag":1,"runID":1,"task":"t","tryNumber":1,"state":"s","worker":"w","finishedAt":1}"#.utf8))
                == nil)
        #expect(FlatJSON.parse(Array(#"{"a":"x\u0001"}"#.utf8))?["a"] == .string("x\u{1}"))
    }

    @Test("unsigned, tampered, wrongly keyed, truncated, oversized and future messages are refused with reasons")
    func rejections() throws {
        let (body, sig) = try codec.encode(message)
        #expect(throws: MessageRejection.unsigned) { try codec.decode(body: body, signature: nil) }
        var tampered = body
        tampered[tampered.count / 2] ^= 1
        #expect(throws: MessageRejection.badSignature) { try codec.decode(body: tampered, signature: sig) }
        let other = try MessageCodec(secret: "another-secret-also-long-enough")
        #expect(throws: MessageRejection.badSignature) { try other.decode(body: body, signature: sig) }
        #expect(throws: MessageRejection.badSignature) { try codec.decode(body: body, signature: "zz") }
        let truncated = Array(body.prefix(body.count - 5))
        #expect(throws: MessageRejection.malformed("the body is not a version-1 task message: it is not valid JSON")) {
            try codec.decode(body: truncated, signature: codec.sign(truncated))
        }
        let huge = [UInt8](repeating: 32, count: MessageCodec.maxBodyBytes + 1)
        #expect(throws: MessageRejection.oversized(bytes: huge.count)) { try codec.decode(body: huge, signature: sig) }
        let future = Array(#"{"v":2,"id":"x"}"#.utf8)
        #expect(throws: MessageRejection.unsupportedVersion(2)) {
            try codec.decode(body: future, signature: codec.sign(future))
        }
        let missing = Array(#"{"v":1,"id":"x"}"#.utf8)
        let e = #expect(throws: MessageRejection.self) {
            try codec.decode(body: missing, signature: codec.sign(missing))
        }
        #expect(e?.description.contains("is missing") == true)
    }

    @Test("a short or missing secret is a configuration error naming ETL_SECRET_KEY")
    func secretChecks() {
        let short = #expect(throws: ConfigError.self) { try MessageCodec(secret: "short") }
        #expect(short?.variable == "ETL_SECRET_KEY")
        let missing = #expect(throws: ConfigError.self) { try MessageCodec(environment: Environment([:])) }
        #expect(missing?.variable == "ETL_SECRET_KEY")
    }
}
