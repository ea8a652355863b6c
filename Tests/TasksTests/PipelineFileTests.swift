import Broker
import Crypto
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

@Suite("Pipeline files: CSV checks, generators, line reading", .timeLimit(.minutes(10)))
struct PipelineFileTests {
    func validate(
        _ table: String, _ csv: String, known: [String: Set<String>] = [:]
    ) throws -> (accepted: [[String]], rejects: [Rejection]) {
        let fx = try PipelineFixture(database: false)
        let path = try fx.write("\(table).csv", csv)
        var v = CSVValidator(spec: B2B.tables.first { $0.table == table }!, known: known)
        var accepted: [[String]] = []
        try v.run(path: path) { accepted.append($0) }
        #expect(v.read == Int64(accepted.count + v.rejects.count))
        return (accepted, v.rejects)
    }

    @Test("a corpus of bad CSV rows, each rejected with its line and reason")
    func csvCorpus() throws {
        let companies = try validate(
            "company",
            """
            cuit,name,is_supplier
            30-71234567-1,Good S.A.,true
            30-7123456-1,Short CUIT,true
            30-71234567-2,,false
            30-71234567-3,Not a bool,maybe
            30-71234567-1,Duplicate,false
            30-71234567-4,Too,many,columns
            "30-71234567-5,Unclosed quote,false

            30-71234567-6,"Comma, Inc.",false
            """)
        #expect(companies.accepted.map { $0[0] } == ["30-71234567-1", "30-71234567-6"])
        let reasons = companies.rejects.map { "\($0.line): \($0.reason)" }
        #expect(
            reasons == [
                "3: cuit \"30-7123456-1\" is not a CUIT like 30-71234567-1",
                "4: name is empty",
                "5: is_supplier \"maybe\" is not true or false",
                "6: duplicate key cuit=30-71234567-1, first on line 2",
                "7: wrong column count: 4 instead of 3 (cuit,name,is_supplier)",
                "8: a quoted field is not closed on its line",
            ])
        let known = ["company": Set(["30-71234567-1"]), "product": Set(["1"])]
        let sales = try validate(
            "product",
            """
            id,supplier_cuit,name,default_price
            1,30-71234567-1,Tea,2.50
            2,30-71234567-9,Unknown supplier,1.00
            3,30-71234567-1,Bad price,1.234
            4,30-71234567-1,Negative,-1
            x,30-71234567-1,Bad id,1
            0,30-71234567-1,Zero id,1
            """, known: known)
        #expect(sales.accepted.count == 1)
        #expect(
            sales.rejects.map(\.reason) == [
                "unknown company: supplier_cuit 30-71234567-9 is not a loaded company",
                "default_price \"1.234\" has more than 2 decimals",
                "default_price \"-1\" is not a non-negative decimal number like 12.50",
                "id \"x\" is not a whole number",
                "id 0 is below 1",
            ])
        let lines = try validate(
            "sales",
            """
            order_id,line,product_id,quantity,unit_price,total
            1,1,1,3,2.50,7.50
            1,2,1,3,2.50,7.00
            1,3,1,0,2.50,0
            1,4,1,3000000000,2.50,7500000000.00
            1,5,1,2147483647,9999999999.99,1.00
            """, known: ["orders": ["1"], "product": ["1"]])
        #expect(
            lines.rejects.map(\.reason) == [
                "total 7.00 is not quantity 3 × unit price 2.50", "quantity 0 is below 1",
                "quantity 3000000000 is above 2147483647",  // Postgres integer
                // Overflows Int64 cents: rejected, no crash.
                "total 1.00 is not quantity 2147483647 × unit price 9999999999.99",
            ])
        let customers = try validate(
            "customer",
            """
            document_number,full_name,date_of_birth,address,country_code,username
            1,Ana,1990-02-30,Somewhere,AR,ana
            2,Ana,1990-02-28,Somewhere,ar,ana2
            3,Ana,1990-02-28,Somewhere,AR,Ana Three
            """)
        #expect(
            customers.rejects.map(\.reason) == [
                "date_of_birth \"1990-02-30\" is not a date (YYYY-MM-DD)",
                "country_code \"ar\" is not a two-letter country code like AR",
                "username \"Ana Three\" is not a user name of lower-case letters, digits, '.', '_' or '-'",
            ])
    }

    @Test("a wrong header stops the load with the file and the fix")
    func wrongHeader() throws {
        #expect(throws: PipelineError.self) { try validate("company", "id,name\n1,x\n") }
    }

    @Test("the weblog generator: deterministic, parseable, and every malformed line it injects is rejected")
    func weblogGenerator() throws {
        let fx = try PipelineFixture(database: false)
        func make(_ seed: UInt64, _ folder: String) throws -> WeblogGenerator.Summary {
            let g = try WeblogGenerator(
                options: .init(lines: 20_000, seed: seed, end: 1_717_200_000, badRate: 0.02),
                b2bDir: fx.settings.b2bDir, ip2geoCSV: "\(fx.settings.sourcesDir)/data/ip2geo.csv")
            return try g.write(to: "\(fx.path)/\(folder)")
        }
        let a = try make(7, "a")
        let b = try make(7, "b")
        let c = try make(8, "c")
        let bytes = { (p: String) in try Data(contentsOf: URL(fileURLWithPath: p)) }
        #expect(try bytes(a.path) == bytes(b.path))
        #expect(try bytes(a.path) != bytes(c.path))
        #expect(a.path.hasSuffix("access_log_20240601T000000.log"))
        let rules = try DeviceRules.shared()
        var e = WeblogEnricher(
            rules: rules, ranges: try WeblogEnricher.ranges(pg: nil, settings: fx.settings), cacheSize: 1000)
        var good = 0
        var bad = 0
        var lines = 0
        var loginOK = 0
        var withCountry = 0
        var outside = 0  // good lines not in the 24 hours before the file's end
        var reasons = Set<String>()
        // Each customer's country, to check that IPs are coherent with it.
        var countryOf: [String: String] = [:]
        var v = CSVValidator(spec: B2B.tables[3], known: [:])
        try v.run(path: "\(fx.settings.b2bDir)/customer.csv") { countryOf[$0[5]] = $0[4] }
        try LineReader(path: a.path).forEachLine { line, _, cut in
            lines += 1
            switch e.enrich(line, cut: cut) {
            case .success(let r):
                good += 1
                if let user = r.record.user {
                    #expect(r.country == countryOf[user], "user \(user) logged from \(r.country ?? "-")")
                }
                if r.record.method == "POST" && r.record.path == "/login" && r.record.status == 200 { loginOK += 1 }
                if r.country != nil { withCountry += 1 }
                if r.record.timestamp < 1_717_200_000 - 86_400 || r.record.timestamp >= 1_717_200_000 { outside += 1 }
            case .failure(let why):
                bad += 1
                reasons.insert(why.reason.count > 40 ? String(why.reason.prefix(40)) : why.reason)
            }
            return true
        }
        #expect(lines == 20_000)
        #expect(bad == a.badLines && bad > 0)
        #expect(good == 20_000 - a.badLines)
        #expect(loginOK > 100)
        #expect(withCountry == good)
        #expect(outside == 0, "\(outside) lines outside 2024-05-31")
        print("weblog generator rejects: \(reasons)")
        #expect(reasons.count >= 5, "\(reasons)")
    }

    @Test("platform history: a day's export depends on the seed and the day only; prices from that day's catalog")
    func platformHistory() throws {
        let fx = try PipelineFixture(database: false)
        var s = fx.settings
        s.historyStart = Day("2024-01-01")!
        let read = { (p: String) in try String(contentsOfFile: p, encoding: .utf8) }
        // Up to D and then up to D+1, against up to D+1 at once: every day's files are the same bytes.
        s.exportDir = "\(fx.path)/a"
        let first = try PlatformHistory.export(upTo: Day("2024-03-30")!, ordersPerDay: 40, seed: 3, settings: s)
        let next = try PlatformHistory.export(upTo: Day("2024-03-31")!, ordersPerDay: 40, seed: 3, settings: s)
        #expect(first.days == 90 && next.days == 1 && next.first == Day("2024-03-31"))
        s.exportDir = "\(fx.path)/b"
        _ = try PlatformHistory.export(upTo: Day("2024-03-31")!, ordersPerDay: 40, seed: 3, settings: s)
        let fm = FileManager.default
        let days = try fm.contentsOfDirectory(atPath: "\(fx.path)/a").filter { !$0.hasPrefix(".") }.sorted()
        let bDays = try fm.contentsOfDirectory(atPath: "\(fx.path)/b").sorted()
        #expect(days.count == 91 && days == bDays)
        var changedDays = 0
        for d in days {
            let files = try fm.contentsOfDirectory(atPath: "\(fx.path)/a/\(d)").sorted()
            let bFiles = try fm.contentsOfDirectory(atPath: "\(fx.path)/b/\(d)").sorted()
            #expect(files == bFiles, "\(d)")
            for f in files {
                let (x, y) = (try read("\(fx.path)/a/\(d)/\(f)"), try read("\(fx.path)/b/\(d)/\(f)"))
                #expect(x == y, "\(d)/\(f)")
            }
            if files.contains("inventory.csv") || files.contains("customer.csv") { changedDays += 1 }
        }
        #expect(changedDays > 20, "the platform changes over time: \(changedDays) days with dimension changes")
        // A different seed gives a different history.
        s.exportDir = "\(fx.path)/c"
        _ = try PlatformHistory.export(upTo: Day("2024-01-02")!, ordersPerDay: 40, seed: 4, settings: s)
        let (c2, a2) = (
            try read("\(fx.path)/c/day=2024-01-02/orders.csv"), try read("\(fx.path)/a/day=2024-01-02/orders.csv")
        )
        #expect(c2 != a2)

        // Each order is on its day, each line at the price of the buyer's catalog that day (the base
        // catalog with each day's changes and removals applied in order).
        var catalog: [String: String] = [:]
        for line in try read("\(s.b2bDir)/inventory.csv").split(separator: "\n").dropFirst() {
            let f = line.split(separator: ",")
            catalog["\(f[0])/\(f[1])"] = String(f[2])
        }
        var orders = 0
        for d in days {
            let dir = "\(fx.path)/a/\(d)"
            if let text = try? read("\(dir)/inventory_removed.csv") {
                for line in text.split(separator: "\n").dropFirst() {
                    let f = line.split(separator: ",")
                    catalog["\(f[0])/\(f[1])"] = nil
                }
            }
            if let text = try? read("\(dir)/inventory.csv") {
                for line in text.split(separator: "\n").dropFirst() {
                    let f = line.split(separator: ",")
                    catalog["\(f[0])/\(f[1])"] = String(f[2])
                }
            }
            var buyer: [String: String] = [:]
            for line in try read("\(dir)/orders.csv").split(separator: "\n").dropFirst() {
                let f = line.split(separator: ",")
                buyer[String(f[0])] = String(f[1])
                #expect(f[3].hasPrefix(d.dropFirst(4)), "\(d): \(line)")
            }
            orders += buyer.count
            var withLines = Set<String>()
            for line in try read("\(dir)/sales.csv").split(separator: "\n").dropFirst() {
                let f = line.split(separator: ",")
                guard let company = buyer[String(f[0])] else {
                    Issue.record("\(d): a sales line without its order: \(line)")
                    continue
                }
                withLines.insert(String(f[0]))
                #expect(catalog["\(company)/\(f[2])"] == String(f[4]), "\(d): \(line)")
            }
            #expect(withLines.count == buyer.count, "\(d): orders with no sales line")
        }
        #expect(orders == 91 * 40)
    }

    @Test("a file's scan: checksum, line count and ranges that start at line starts and cover it")
    func scanRanges() throws {
        let fx = try PipelineFixture(database: false)
        var text = ""
        for i in 1...5000 { text += "line \(i) " + String(repeating: "x", count: i % 97) + "\n" }
        text += "last line without newline"
        let path = try fx.write("f.log", text)
        let scan = try WeblogLoad.scanFile(path: path, rangeBytes: 10_000)
        #expect(scan.lines == 5001)
        #expect(scan.checksum == SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined())
        #expect(scan.ranges.count > 10)
        let bytes = Array(text.utf8)
        var expectedStart: Int64 = 0
        for r in scan.ranges {
            #expect(r.start == expectedStart)
            #expect(r.start == 0 || bytes[Int(r.start) - 1] == 10)
            let linesBefore = bytes[0..<Int(r.start)].filter { $0 == 10 }.count
            #expect(r.firstLine == Int64(linesBefore + 1))
            expectedStart = r.end
        }
        #expect(expectedStart == Int64(bytes.count))
        // Reading each range yields every line exactly once.
        var seen = 0
        for r in scan.ranges {
            try LineReader(path: path, from: r.start, end: r.end, bufferSize: 4096).forEachLine { _, _, _ in
                seen += 1
                return true
            }
        }
        #expect(seen == 5001)
        // A file still written to: its last line without a newline waits (is not in the scan).
        let growing = try WeblogLoad.scanFile(path: path, rangeBytes: 10_000, final: false)
        let lastNewline = Int64(bytes.lastIndex(of: 10)! + 1)
        #expect(growing.lines == 5000 && growing.end == lastNewline && growing.ranges.last?.end == lastNewline)
        #expect(
            growing.checksum
                == SHA256.hash(data: Data(bytes[0..<Int(lastNewline)])).map { String(format: "%02x", $0) }.joined())
        // The same file after its first 1,000 lines were registered: the rest, numbered on.
        let known = Int64(
            text.utf8.split(separator: 10, omittingEmptySubsequences: false)[0..<1000].map { $0.count + 1 }
                .reduce(0, +))
        let rest = try WeblogLoad.scanFile(path: path, rangeBytes: 10_000, known: known, firstLine: 1001)
        #expect(rest.lines == 4001 && rest.ranges.first?.start == known && rest.ranges.first?.firstLine == 1001)
        #expect(
            rest.prefixAtKnown
                == SHA256.hash(data: Data(bytes[0..<Int(known)])).map { String(format: "%02x", $0) }.joined())
        #expect(rest.ranges.map(\.lines).reduce(0, +) == 4001)
    }

    @Test("the line reader cuts a line longer than its buffer and goes on with the next")
    func longLine() throws {
        let fx = try PipelineFixture(database: false)
        let path = try fx.write("l.log", "short\n" + String(repeating: "y", count: 20_000) + "\nafter\n")
        var got: [(Int, Int64, Bool)] = []
        try LineReader(path: path, bufferSize: 4096).forEachLine { line, start, cut in
            got.append((line.count, start, cut))
            return true
        }
        #expect(got.map(\.0) == [6, 4096, 6])
        #expect(got.map(\.2) == [false, true, false])
        #expect(got[2].1 == 6 + 20_001)
    }
}

@Suite("CSV record splitting", .timeLimit(.minutes(10)))
struct CSVLineTests {
    @Test("quoted fields, doubled quotes, empty fields, an unclosed quote, UTF-8")
    func split() {
        #expect(CSVLine.split(#"a,"b,c","d""e",,"""#) == ["a", "b,c", "d\"e", "", ""])
        #expect(CSVLine.split(#"x"y,z"#) == ["x\"y", "z"])
        #expect(CSVLine.split(#""open,field"#) == nil)
        #expect(CSVLine.split("María,Córdoba,\"São Paulo, BR\"") == ["María", "Córdoba", "São Paulo, BR"])
        #expect(CSVLine.split("") == [""])
        // A field written for a CSV record is quoted when it holds a CR LF ("\r\n": one Character).
        #expect(CSVLine.field("two\r\nlines") == "\"two\r\nlines\"")
        #expect(CSVLine.field("plain") == "plain")
    }
}

/// The validator's plain path (a line checked on its bytes) must accept exactly the lines the full
/// check accepts, with the same values, and leave every other line to it: run over good rows and
/// many mutations of them, with and without the plain path, both runs must agree on everything.
@Suite("CSV plain path against the full check", .timeLimit(.minutes(10)))
struct CSVPlainPathTests {
    struct Outcome: Equatable {
        var rows: [[String]] = []
        var rejects: [String] = []
        var known: [String: Set<String>] = [:]
        var read: Int64 = 0
        var accepted: Int64 = 0
    }

    static func run(
        _ spec: CSVTableSpec, path: String, known: [String: Set<String>], plain: Bool
    ) throws -> (
        Outcome, plainRows: Int
    ) {
        var v = CSVValidator(spec: spec, known: known)
        var o = Outcome()
        var plainRows = 0
        let onPlain: ((UnsafeBufferPointer<UInt8>) throws -> Void)? =
            plain
            ? { line in
                plainRows += 1
                o.rows.append(
                    line.split(separator: 44, omittingEmptySubsequences: false).map {
                        String(decoding: $0, as: UTF8.self)
                    })
            } : nil
        try v.run(path: path, plain: onPlain) { o.rows.append($0) }
        o.rejects = v.rejects.map { "\($0.line)|\($0.raw)|\($0.reason)" }
        o.known = v.known
        o.read = v.read
        o.accepted = v.accepted
        return (o, plainRows)
    }

    /// SplitMix64: the same mutations on every run.
    struct Mix {
        var state: UInt64
        mutating func next(_ n: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(n))
        }
    }

    static let pieces: [[UInt8]] =
        [
            "0", "1", "9", "00", "-", ".", ",", " ", "\"", "\\", "T", ":", "\t", "\r", "+", "e", "a", "Z", "é",
            "\u{A0}",
            "\u{200B}", "\u{FEFF}", "2024-02-29", "23:59:59", "99", "1e3", "0.5", "\u{7F}",
        ].map { Array($0.utf8) }

    static func mutate(_ line: [UInt8], _ r: inout Mix) -> [UInt8] {
        var l = line
        for _ in 0...r.next(2) {
            let at = l.isEmpty ? 0 : r.next(l.count)
            let piece = pieces[r.next(pieces.count)]
            switch r.next(4) {
            case 0: l.insert(contentsOf: piece, at: r.next(l.count + 1))
            case 1: if !l.isEmpty { l.remove(at: at) }
            case 2: if !l.isEmpty { l.replaceSubrange(at...at, with: piece) }
            default:  // a field replaced whole
                var fields = l.split(separator: 44, omittingEmptySubsequences: false).map(Array.init)
                fields[r.next(fields.count)] = piece
                l = Array(fields.joined(separator: [44]))
            }
        }
        return l
    }

    @Test(
        "every table's good rows, near misses and 600 copies, most mutated: the same rows, rejects, keys, counts"
    )
    func sameOutcome() throws {
        let fx = try PipelineFixture(database: false)
        let day = Day(strict: "2024-02-29")!
        let known: [String: Set<String>] = [
            "company": ["30-71234567-1", "30-71234567-6"], "product": ["1", "2", "10"],
            "customer": ["AR-1", "BR-2"], "orders": ["1", "2", "20089000001"],
            "inventory": ["30-71234567-1\u{1F}1", "30-71234567-6\u{1F}2"],
        ]
        let good: [(CSVTableSpec, [String])] = [
            (B2B.tables[0], ["30-71234567-2,Good S.A.,true", "30-71234567-3,Other,false", "30-71234567-4,Third,true"]),
            (B2B.tables[1], ["3,30-71234567-1,Tea,2.50", "4,30-71234567-6,Mate,10", "5,30-71234567-1,Yerba,0.5"]),
            (B2B.tables[2], ["30-71234567-1,2,1.25,0", "30-71234567-6,1,100.00,7", "30-71234567-1,10,3,12"]),
            (
                B2B.tables[3],
                [
                    "AR-3,Ana Paz,1990-02-28,Calle 1,AR,ana.paz", "BR-4,Bo,2000-12-31,Rua 2,BR,bo_4",
                    "CL-5,C,1904-02-29,X,CL,c-5",
                ]
            ),
            (
                B2BLoad.ordersSpec(day: day),
                [
                    "3,30-71234567-1,AR-1,2024-02-29 00:00:00", "4,30-71234567-6,BR-2,2024-02-29 23:59:59.123456",
                    "20089000005,30-71234567-1,BR-2,2024-02-29 12:30:00",
                ]
            ),
            (
                B2B.tables[5],
                ["1,1,1,3,2.50,7.50", "2,1,2,1,0.05,0.05", "20089000001,2,10,12,1.5,18.00", "2,2,1,2,3,6"]
            ),
            (B2B.inventoryRemoved, ["30-71234567-1,1", "30-71234567-6,2"]),
        ]
        // Near misses, each next to a good form.
        let tricky = [
            "5,30-71234567-1,AR-1,2024-02-29 12:30:00.", "6,30-71234567-1,AR-1,2024-02-29 12:30:00Z",
            "7,30-71234567-1,AR-1,2024-02-29T12:30:00", "8,30-71234567-1,AR-1,2024-02-29  12:30:00",
            "9,30-71234567-1,AR-1,2024-02-29 12:30:60", "10,30-71234567-1,AR-1,2024-02-29 24:00:00",
            "11,30-71234567-1,AR-1,2024-02-29 12:30:5.5", "17,30-71234567-1,AR-1,2024-02-29 23:59:59.999999",
            "18,30-71234567-1,AR-1,2024-02-29 23:59:59.999999999999999", "19,30-71234567-1,AR-1,2024-02-29 12:30:0x1p1",
            "20,30-71234567-1,AR-1,2024-02-29 +1:30:00", "21,30-71234567-1,AR-1,2024-+2-29 12:30:00",
            "012,30-71234567-1,AR-1,2024-02-29 12:30:00",
            "-13,30-71234567-1,AR-1,2024-02-29 12:30:00", "+14,30-71234567-1,AR-1,2024-02-29 12:30:00",
            "15,30-71234567-1,AR-1,2024-02-29 12:30:00 ", "16,30-71234567-1,AR-1,2024-03-01 00:00:00",
            "3,1,1,3,2.50,7.5", "3,2,1,3,2.5,7.50", "3,3,1,3,02.50,7.50", "3,4,1,3,2.50,007.50", "3,5,1,03,2.50,7.50",
            "3,6,1,3,2.500,7.50", "3,7,1,3,.50,1.50", "3,8,1,3,2.,7.50", "3,9,1,3,2.50,7.50,",
            "30-71234567-7,Yes,TRUE", "30-71234567-8,Yes,t", "30-71234567-9, Spaced ,true",
            "AR-6,Dee,1990-2-28,X,AR,dee", "AR-7,Dee,1900-02-29,X,AR,dee7", "AR-8,Dee,0000-01-01,X,AR,dee8",
        ]
        var r = Mix(state: 20_261_207)
        for (n, (spec, rows)) in good.enumerated() {
            var lines = rows + tricky
            for _ in 0..<600 {
                let base = Array(rows[r.next(rows.count)].utf8)
                lines.append(String(decoding: r.next(5) == 0 ? base : Self.mutate(base, &r), as: UTF8.self))
            }
            let header = spec.columns.map(\.name).joined(separator: ",")
            let path = try fx.write("t\(n).csv", ([header] + lines).joined(separator: "\n") + "\n")
            let (full, _) = try Self.run(spec, path: path, known: known, plain: false)
            let (fast, plainRows) = try Self.run(spec, path: path, known: known, plain: true)
            #expect(fast == full, "\(spec.table)")
            // The plain path did take the good rows (the test would prove nothing otherwise).
            #expect(plainRows >= rows.count && plainRows < Int(full.accepted) + 1, "\(spec.table): \(plainRows)")
            #expect(full.rejects.count > 100, "\(spec.table): the mutations were rejected too")
            // The same file with CRLF line ends: the same outcome on both paths.
            let crlf = try fx.write("t\(n)-crlf.csv", ([header] + lines).joined(separator: "\r\n") + "\r\n")
            #expect(try Self.run(spec, path: crlf, known: known, plain: false).0 == full, "\(spec.table) CRLF")
            #expect(try Self.run(spec, path: crlf, known: known, plain: true).0 == full, "\(spec.table) CRLF")
        }
    }
}
