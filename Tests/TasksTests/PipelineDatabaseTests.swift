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

@testable import Tasks

/// The loads and reports against a real Postgres, on a small dataset whose answers are worked out
/// by hand below.
@Suite("Pipelines against Postgres", .serialized, .timeLimit(.minutes(10)))
struct PipelineDatabaseTests {
    /// The hand-worked dataset (TestSupport's HandWorkedB2B), whose answers the tests below work out.
    static func writeB2B(_ fx: PipelineFixture) throws -> String { try HandWorkedB2B.write(fx) }

    func loadB2B(_ fx: PipelineFixture) throws -> [B2B.TableResult] {
        let meta = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { meta.close() }
        return try B2BLoad.load(pg: meta, settings: fx.settings, runID: 1, upTo: Day("2024-06-15")!, log: { _ in })
            .tables
    }

    func fixture(_ name: String = #function) throws -> PipelineFixture {
        let fx = try PipelineFixture(name: name, ownB2B: true)
        _ = try Self.writeB2B(fx)
        return fx
    }

    @Test("b2b: bad rows rejected with reasons, good rows loaded, counts add up, and a broken load keeps the old data")
    func b2bLoad() throws {
        let fx = try fixture()
        let results = try loadB2B(fx)
        // Grouped, not keyed uniquely: a table loaded twice is a failed expectation, not a crash.
        let grouped = Dictionary(grouping: results, by: \.table)
        #expect(grouped.values.allSatisfy { $0.count == 1 }, "\(grouped.mapValues(\.count))")
        let byTable = grouped.compactMapValues(\.first)
        #expect(byTable["customer"]?.loaded == 7 && byTable["customer"]?.rejected == 1)
        #expect(byTable["orders"]?.loaded == 7 && byTable["orders"]?.rejected == 1)  // order 8's customer was rejected
        #expect(byTable["sales"]?.loaded == 8 && byTable["sales"]?.rejected == 2)  // order 99 unknown, order 8 rejected
        let s = fx.settings
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).sales") == 8)
        let reasons = try fx.pg!.query(
            """
            SELECT regexp_replace(r.source, '^.*/exports/', ''), r.line_number, r.reason
            FROM \(s.loads).reject r JOIN \(s.loads).load l ON l.id = r.load_id
            WHERE r.source LIKE '%sales.csv' ORDER BY 1, 2
            """
        ).rows
            .map {
                "\(try $0.decode(String.self, 0)):\(try $0.decode(Int64.self, 1)): \(try $0.decode(String.self, 2))"
            }
        #expect(
            reasons == [
                "day=2024-02-01/sales.csv:2: unknown orders: order_id 8 is not a loaded orders",
                "day=2024-06-01/sales.csv:3: unknown orders: order_id 99 is not a loaded orders",
            ])
        #expect(
            try fx.count(
                """
                SELECT count(*) FROM \(s.loads).load
                WHERE state = 'finished' AND rows_read = rows_loaded + rows_rejected
                """
            ) == 6)
        // Every day from the history's start to the date is in the ledger, once.
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).b2b_day") == 382)
        #expect(try B2BLoad.watermark(pg: fx.pg!, settings: s) == Day("2024-06-15"))
        // A load row left `running` by an attempt that died is marked broken by the next load.
        let stale = try fx.pg!.query(
            "INSERT INTO \(s.loads).load (pipeline, source) VALUES ('b2b', 'killed attempt') RETURNING id"
        ).rows[0].decode(Int64.self, 0)
        // A second load that breaks (a loaded day's customers changed afterwards) keeps the loaded data whole.
        try fx.write(
            "generated/exports/day=2023-06-02/customer.csv",
            "document_number,full_name,date_of_birth,address,country_code,username\n1,Ana,1990-01-01,x,UY,ana\n")
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).b2b_day WHERE day = '2023-06-02'") == 1)
        let refused = #expect(throws: PipelineError.self) { try loadB2B(fx) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("customer.csv"), "\(String(describing: refused))")
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).sales") == 8)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).orders") == 7)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).customer") == 7)
        let broken = try fx.pg!.query(
            "SELECT count(*), min(error) FROM \(s.loads).load WHERE state = 'broken' AND broke_at IS NOT NULL"
        ).rows[0]
        #expect(try broken.decode(Int64.self, 0) == 7)  // the 6 tables of the second load and the stale row
        let staleError = try fx.pg!.query("SELECT state, error FROM \(s.loads).load WHERE id = $1", [stale]).rows[0]
        #expect(
            try staleError.decode(String.self, 0) == "broken"
                && staleError.decode(String.self, 1).hasPrefix("abandoned"))
        #expect(
            try fx.count("SELECT count(*) FROM \(s.loads).load WHERE error LIKE '%changed its dimension rows%'") == 6)
    }

    /// The access log of the hand-worked example (times before the cut-off of 2024-06-16).
    static func weblog(_ fx: PipelineFixture) throws -> String {
        let table = try IPRangeTable(
            csv: String(contentsOfFile: "\(fx.settings.sourcesDir)/data/ip2geo.csv", encoding: .utf8))
        let ip = { (c: String) in IPRangeTable.dottedQuad(table.ranges(of: c)[0].lowerBound + 1) }
        let (ar, br, uy) = (ip("AR"), ip("BR"), ip("UY"))
        let win =
            """
            Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 \
            Safari/537.36
            """
        let iphone =
            """
            Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
            Version/17.2 Mobile/15E148 Safari/604.1
            """
        let mac =
            """
            Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 \
            Safari/605.1.15
            """
        let samsung =
            """
            Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Mobile Safari/537.36
            """
        let pixel =
            """
            Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 \
            Mobile Safari/537.36
            """
        let linux = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
        let ipad =
            """
            Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 \
            Mobile/15E148 Safari/604.1
            """
        func line(
            _ ip: String, _ user: String, _ request: String, _ status: Int, _ ua: String, day: String = "10/Jun/2024"
        ) -> String {
            "\(ip) - \(user) [\(day):10:00:00 +0000] \"\(request) HTTP/1.1\" \(status) 100 \"-\" \"\(ua)\""
        }
        let lines = [
            line(ar, "ana", "POST /login", 200, win), line(ar, "ana", "GET /products/1", 200, win),
            line(ar, "ana", "GET /products/2", 200, win),
            line(ar, "bob", "POST /login", 200, iphone), line(ar, "bob", "GET /cart", 200, iphone),
            line(ar, "eva", "POST /login", 200, mac),
            line(br, "caio", "POST /login", 401, win), line(br, "caio", "POST /login", 200, iphone),
            line(br, "duda", "POST /login", 200, samsung),
            line(br, "duda", "GET /products/3", 200, samsung), line(br, "duda", "GET /products/3", 200, samsung),
            line(br, "duda", "GET /products/3", 200, samsung),
            line(br, "x1", "POST /login", 401, pixel), line(br, "x2", "POST /login", 401, pixel),
            line(br, "x3", "POST /login", 401, pixel),
            line(br, "zed", "GET /", 200, pixel),
            line(br, "-", "POST /login", 200, linux),
            line(uy, "gus", "GET /", 200, linux), line(uy, "fay", "GET /", 200, ipad),
            line(ar, "ana", "POST /login", 200, pixel, day: "20/Jun/2024"),
            "this is not a log line",
        ]
        return try fx.write("apache-logs/access_log_20240611T000000.log", lines.joined(separator: "\n") + "\n")
    }

    func loadWeblogs(_ fx: PipelineFixture, run: Int64 = 1) throws -> WeblogLoad.PartResult {
        let pg = fx.pg!
        _ = try WeblogLoad.register(pg: pg, settings: fx.settings, runID: run, logicalDate: "2024-06-15", log: { _ in })
        let r = try WeblogLoad.loadPart(
            pg: pg, settings: fx.settings, owner: "run \(run)/load_part_0", checkDeadline: {}, log: { _ in })
        let f = try WeblogLoad.finalize(pg: pg, settings: fx.settings, runID: run)
        #expect(f.unfinished == 0 && f.unfinishedOwn == 0)
        return r
    }

    /// A sources folder of its own (the repository's DDL linked in) whose ip2geo.csv is the
    /// repository's, changed by `change`; the caller removes it.
    static func ip2geoSources(_ tag: String, _ change: (String) -> String) throws -> String {
        let repo = TestServices.repoRoot.appendingPathComponent("sources").path
        let sources = FileManager.default.temporaryDirectory.appendingPathComponent(
            "etl-\(tag)-\(TestServices.randomSuffix())"
        ).path
        try FileManager.default.createDirectory(atPath: "\(sources)/data", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(sources)/ddl", withDestinationPath: "\(repo)/ddl")
        let text = try String(contentsOfFile: "\(repo)/data/ip2geo.csv", encoding: .utf8)
        try change(text).write(toFile: "\(sources)/data/ip2geo.csv", atomically: true, encoding: .utf8)
        return sources
    }

    @Test("an IP-to-country file with CRLF line ends loads as its LF form does")
    func ip2geoCRLF() throws {
        let meta = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { meta.close() }
        let lf = try PipelineFixture(name: "ip2geolf")
        let lfResult = try IP2Geo.load(tx: lf.pg!, meta: meta, settings: lf.settings, runID: 1, logicalDate: nil)
        // The same file with CRLF line ends, in a sources folder of its own (the DDL linked in).
        let sources = try Self.ip2geoSources("crlf") { $0.replacingOccurrences(of: "\n", with: "\r\n") }
        defer { try? FileManager.default.removeItem(atPath: sources) }
        let repo = TestServices.repoRoot.appendingPathComponent("sources").path
        let crlf = try PipelineFixture(
            name: "ip2geocrlf", extra: ["ETL_SOURCES_DIR": sources, "ETL_B2B_DIR": "\(repo)/data"])
        let crlfResult = try IP2Geo.load(tx: crlf.pg!, meta: meta, settings: crlf.settings, runID: 1, logicalDate: nil)
        #expect(lfResult.loaded > 1000 && lfResult.rejected == 0)
        #expect(
            [crlfResult.read, crlfResult.loaded, crlfResult.rejected] == [
                lfResult.read, lfResult.loaded, lfResult.rejected,
            ])
        #expect(try crlf.digest("\(crlf.settings.datalake).ip2geo") == lf.digest("\(lf.settings.datalake).ip2geo"))
    }

    @Test("the three reports on the hand-worked dataset")
    func reports() throws {
        let fx = try fixture()
        _ = try loadB2B(fx)
        let meta = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { meta.close() }
        _ = try IP2Geo.load(tx: fx.pg!, meta: meta, settings: fx.settings, runID: 1, logicalDate: nil)
        _ = try Self.weblog(fx)
        let loaded = try loadWeblogs(fx)
        #expect(loaded.read == 21 && loaded.loaded == 20 && loaded.rejected == 1)
        let day = Day("2024-06-15")!

        let sales = try Reports.run(Reports.monthlySales, date: day, tx: fx.pg!, settings: fx.settings)
        var expected: [[String]] = (0..<12).map { i in
            [Day("2023-06-01")!.monthStart(offset: i).description, "0", "0", "0.00"]
        }
        expected[0] = ["2023-06-01", "1", "3", "5.50"]  // order 2: 2 tea + 1 coffee
        expected[3] = ["2023-09-01", "1", "0", "0.00"]  // order 7 has no lines
        expected[7] = ["2024-01-01", "2", "9", "25.50"]  // orders 3 and 4
        expected[11] = ["2024-05-01", "1", "5", "7.50"]  // order 5, one second before the window ends
        #expect(sales.rows == expected)

        let devices = try Reports.run(Reports.popularDevices, date: day, tx: fx.pg!, settings: fx.settings)
        #expect(
            devices.rows == [
                ["1", "Windows PC", "2", "4"],  // ana ×3, caio ×1
                ["2", "iPhone", "2", "3"],  // bob ×2, caio ×1
                ["3", "Samsung SM-G991B", "1", "4"],  // duda
                ["4", "Linux PC", "1", "1"],  // gus; ties by name: Linux PC < Mac < iPad
                ["5", "Mac", "1", "1"],  // eva
            ])

        // Successful logins by the login IP's country: AR has ana, bob, eva (3); BR has caio and
        // duda (2; its failed logins and the anonymous one do not count). Products sold over the 12
        // months to AR customers (ana, bob): tea 2 + 5, coffee 1.
        let products = try Reports.run(Reports.popularProducts, date: day, tx: fx.pg!, settings: fx.settings)
        #expect(
            products.rows == [
                ["Argentina", "1", "Tea", "7", "10.50"],
                ["Argentina", "2", "Coffee", "1", "2.50"],
            ])
        // The CSV is written from the committed rows (here: no transaction is open).
        #expect(
            try Reports.writeCSV(Reports.popularProducts, date: day, pg: fx.pg!, settings: fx.settings) == products.path
        )
        let csv = try String(contentsOfFile: products.path, encoding: .utf8)
        #expect(csv == "country,rank,product,units,revenue\nArgentina,1,Tea,7,10.50\nArgentina,2,Coffee,1,2.50\n")
        #expect(products.path.hasSuffix("reports/popular-products/date=2024-06-15/report.csv"))
        // Running a report again replaces its rows.
        _ = try Reports.run(Reports.popularDevices, date: day, tx: fx.pg!, settings: fx.settings)
        #expect(try fx.count("SELECT count(*) FROM \(fx.settings.datamart).popular_devices") == 5)
    }

    @Test(
        "an ip2geo load that renames a country makes popular-products out of date, and only it; the same file does not")
    func ip2geoNamesChanged() throws {
        let fx = try fixture()
        _ = try loadB2B(fx)
        let meta = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { meta.close() }
        let pg = fx.pg!
        var s = fx.settings
        _ = try IP2Geo.load(tx: pg, meta: meta, settings: s, runID: 1, logicalDate: nil)
        _ = try Self.weblog(fx)
        _ = try loadWeblogs(fx)
        let day = Day("2024-06-15")!
        for r in Reports.all { _ = try Reports.run(r, date: day, tx: pg, settings: s) }
        let names = "SELECT count(*) FROM \(s.loads).ip2geo_names"
        #expect(try fx.count(names) == 1)
        // The same file again: the same names, nothing out of date.
        _ = try IP2Geo.load(tx: pg, meta: meta, settings: s, runID: 2, logicalDate: nil)
        #expect(try fx.count(names) == 1)
        #expect(try Freshness.computed(pg: pg, settings: s).allSatisfy { $0.outOfDate.isEmpty })
        // A new file that renames Argentina (the ranges unchanged), in a sources folder of its own.
        let sources = try Self.ip2geoSources("names") {
            $0.replacingOccurrences(of: "\"AR\",\"Argentina\"", with: "\"AR\",\"Argentine Republic\"")
        }
        defer { try? FileManager.default.removeItem(atPath: sources) }
        s.sourcesDir = sources
        _ = try IP2Geo.load(tx: pg, meta: meta, settings: s, runID: 3, logicalDate: nil)
        #expect(try fx.count(names) == 2)
        let status = Dictionary(
            uniqueKeysWithValues: try Freshness.computed(pg: pg, settings: s).map { ($0.report, $0.outOfDate) })
        #expect(status["popular-products"]?.first?.hasPrefix("ip2geo country names changed at ") == true, "\(status)")
        #expect(status["popular-devices"] == [] && status["monthly-sales"] == [], "\(status)")
        // Recomputed, it names the country as the table does now, and is current again.
        let again = try Reports.run(Reports.popularProducts, date: day, tx: pg, settings: s)
        #expect(again.rows.first?.first == "Argentine Republic")
        #expect(try Freshness.computed(pg: pg, settings: s, report: "popular-products").first?.outOfDate == [])
        // A datalake from before the names were recorded: the first load records the table's names
        // before replacing them, so a change is seen then too.
        try pg.execute(script: "DELETE FROM \(s.loads).ip2geo_names")
        s.sourcesDir = fx.settings.sourcesDir
        _ = try IP2Geo.load(tx: pg, meta: meta, settings: s, runID: 4, logicalDate: nil)
        #expect(try fx.count(names) == 2)
        #expect(
            try Freshness.computed(pg: pg, settings: s, report: "popular-products").first?.outOfDate.first?.hasPrefix(
                "ip2geo country names changed") == true)
    }

    @Test("a file offered twice, or copied under another name, is loaded once; rows read = loaded + rejected")
    func fileLoadedOnce() throws {
        let fx = try fixture()
        let path = try Self.weblog(fx)
        let first = try loadWeblogs(fx)
        #expect(first.read == 21)
        let again = try loadWeblogs(fx, run: 2)
        #expect(again.read == 0)
        try FileManager.default.copyItem(
            atPath: path, toPath: path.replacingOccurrences(of: "20240611", with: "20240612"))
        let copy = try loadWeblogs(fx, run: 3)
        #expect(copy.read == 0)
        let s = fx.settings
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == 20)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file") == 1)
        let load = try fx.pg!.query(
            "SELECT rows_read, rows_loaded, rows_rejected, state FROM \(s.loads).load WHERE pipeline = 'weblog'"
        ).rows
        #expect(load.count == 1)
        #expect(
            try load[0].decode(Int64.self, 0) == 21 && load[0].decode(Int64.self, 1) == 20
                && load[0].decode(Int64.self, 2) == 1)
        #expect(try load[0].decode(String.self, 3) == "finished")
        let reject = try fx.pg!.query("SELECT line_number, raw, reason FROM \(s.loads).reject").rows
        #expect(reject.count == 1)
        #expect(try reject[0].decode(Int64.self, 0) == 21)
        #expect(try reject[0].decode(String.self, 1) == "this is not a log line")
    }

    @Test("a load that stops between chunks resumes from its last committed chunk, without duplicates")
    func resumeFromChunk() throws {
        let fx = try PipelineFixture(extra: ["ETL_WEBLOG_CHUNK_LINES": "1000", "ETL_WEBLOG_RANGE_MB": "1"])
        let g = try WeblogGenerator(
            options: .init(lines: 12_000, seed: 5, end: 1_717_200_000, badRate: 0.01),
            b2bDir: fx.settings.b2bDir, ip2geoCSV: "\(fx.settings.sourcesDir)/data/ip2geo.csv")
        let file = try g.write(to: fx.settings.weblogDir)
        _ = try WeblogLoad.register(pg: fx.pg!, settings: fx.settings, runID: 1, logicalDate: nil, log: { _ in })
        // The loader's deadline fires after 3 chunks: the attempt stops as a killed one would.
        var chunks = 0
        #expect(throws: TaskTimeout.self) {
            _ = try WeblogLoad.loadPart(
                pg: fx.pg!, settings: fx.settings, owner: "run 1/load_part_0",
                checkDeadline: {
                    chunks += 1
                    if chunks > 3 { throw TaskTimeout() }
                }, log: { _ in })
        }
        let s = fx.settings
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE state = 'broken'") == 1)
        let partial = try fx.count("SELECT count(*) FROM \(s.datalake).weblogs")
        #expect(partial > 0 && partial < 12_000)
        let committedRead = try fx.count("SELECT sum(rows_read)::bigint FROM \(s.loads).weblog_range")
        #expect(committedRead == 2000)  // the deadline is checked once before claiming, then before each chunk
        // The next attempt of the same task resumes.
        let rest = try WeblogLoad.loadPart(
            pg: fx.pg!, settings: fx.settings, owner: "run 1/load_part_0", checkDeadline: {}, log: { _ in })
        _ = try WeblogLoad.finalize(pg: fx.pg!, settings: fx.settings, runID: 1)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == Int64(file.lines - file.badLines))
        #expect(
            try fx.count("SELECT count(DISTINCT line_number) FROM \(s.datalake).weblogs")
                == Int64(file.lines - file.badLines))
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).reject") == Int64(file.badLines))
        #expect(try fx.count("SELECT rows_read FROM \(s.loads).load") == 12_000)
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s.loads).load WHERE state = 'finished' AND rows_loaded + rows_rejected = 12000")
                == 1)
        #expect(rest.read == 12_000 - committedRead)  // the resumed attempt read only what was not committed
    }

    @Test("two loaders on one weblog range at once (a task delivered twice): every line stored once")
    func twoLoadersOneRange() throws {
        let fx = try PipelineFixture(extra: ["ETL_WEBLOG_CHUNK_LINES": "500", "ETL_WEBLOG_RANGE_MB": "64"])
        let lines = 100_000
        let g = try WeblogGenerator(
            options: .init(lines: lines, seed: 9, end: 1_717_200_000, badRate: 0.02),
            b2bDir: fx.settings.b2bDir, ip2geoCSV: "\(fx.settings.sourcesDir)/data/ip2geo.csv")
        let file = try g.write(to: fx.settings.weblogDir)
        _ = try WeblogLoad.register(pg: fx.pg!, settings: fx.settings, runID: 1, logicalDate: nil, log: { _ in })
        let s = fx.settings
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_range") == 1)  // one range: both loaders want it
        // The first claims it; the second comes as the same task's redelivered message would
        // (same owner) while the first is still loading, on connections of their own.
        let owner = "run 1/load_part_0"
        final class Outcome: @unchecked Sendable {
            var results: [Result<WeblogLoad.PartResult, Error>] = []
            let lock = NSLock()
        }
        let outcome = Outcome()
        let settings = fx.settings
        // The first holds after committing its first chunk until the second has started on the
        // range, so they really overlap (without this, the first could finish the only range first).
        let firstCommitted = DispatchSemaphore(value: 0)
        let secondStarted = DispatchSemaphore(value: 0)
        final class Counter: @unchecked Sendable { var chunks = 0 }
        let counter = Counter()
        let group = DispatchGroup()
        for i in 0..<2 {
            DispatchQueue.global().async(group: group) {
                let r = Result { () throws -> WeblogLoad.PartResult in
                    let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
                    defer { pg.close() }
                    if i == 1 { _ = firstCommitted.wait(timeout: .now() + 60) }
                    var started = false
                    // checkDeadline runs before the claim and before each chunk.
                    return try WeblogLoad.loadPart(
                        pg: pg, settings: settings, owner: owner,
                        checkDeadline: {
                            if i == 1 {
                                if !started {
                                    started = true
                                    secondStarted.signal()
                                }
                            } else {
                                counter.chunks += 1
                                // The claim's check, chunk 1's, then this one: chunk 1 committed.
                                if counter.chunks == 3 {
                                    firstCommitted.signal()
                                    _ = secondStarted.wait(timeout: .now() + 60)
                                    usleep(50_000)  // let the second reach its first chunk
                                }
                            }
                        }, log: { _ in })
                }
                outcome.lock.withLock { outcome.results.append(r) }
            }
        }
        #expect(group.wait(timeout: .now() + 120) == .success)
        // They overlapped: one of them found a chunk committed under it by the other, rolled that
        // chunk back and stopped; the other went on. Whatever is left (nothing, if the other
        // reached the end) is finished by a third attempt, as a retry would.
        let failures = outcome.results.compactMap { r -> String? in
            if case .failure(let e) = r { return "\(e)" } else { return nil }
        }
        #expect(failures.count == 1 && failures[0].contains("taken over by another loader"), "\(failures)")
        _ = try WeblogLoad.loadPart(pg: fx.pg!, settings: fx.settings, owner: owner, checkDeadline: {}, log: { _ in })
        _ = try WeblogLoad.finalize(pg: fx.pg!, settings: fx.settings, runID: 1)
        #expect(try fx.count("SELECT rows_read FROM \(s.loads).weblog_range") == Int64(lines))
        #expect(try fx.count("SELECT rows_read FROM \(s.loads).load") == Int64(lines))
        let good = Int64(file.lines - file.badLines)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == good)
        #expect(try fx.count("SELECT count(DISTINCT line_number) FROM \(s.datalake).weblogs") == good)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).reject") == Int64(file.badLines))
        #expect(try fx.count("SELECT count(DISTINCT line_number) FROM \(s.loads).reject") == Int64(file.badLines))
    }

    @Test("an empty file (it waits: no complete line), and a line over 1 MiB ending a chunk: offsets and line numbers")
    func emptyFileAndLongLine() throws {
        let fx = try PipelineFixture(extra: ["ETL_WEBLOG_CHUNK_LINES": "2"])
        func line(_ n: Int) -> String {
            "10.0.0.\(n) - - [10/Jun/2024:10:00:0\(n) +0000] \"GET /p/\(n) HTTP/1.1\" 200 1 \"-\" \"agent\""
        }
        let long = String(repeating: "x", count: 1_500_000)
        try fx.write(
            "apache-logs/access_log_20240610T000000.log",
            [line(1), long, line(3), line(4), line(5)].joined(separator: "\n") + "\n")
        try fx.write("apache-logs/access_log_20240611T000000.log", "")
        _ = try WeblogLoad.register(pg: fx.pg!, settings: fx.settings, runID: 1, logicalDate: nil, log: { _ in })
        let r = try WeblogLoad.loadPart(
            pg: fx.pg!, settings: fx.settings, owner: "run 1/load_part_0", checkDeadline: {}, log: { _ in })
        let f = try WeblogLoad.finalize(pg: fx.pg!, settings: fx.settings, runID: 1)
        #expect(f.files.count == 1 && f.unfinished == 0 && f.unfinishedOwn == 0)
        #expect(r.read == 5 && r.loaded == 4 && r.rejected == 1)
        let s = fx.settings
        let lines = try fx.pg!.query("SELECT line_number, path FROM \(s.datalake).weblogs ORDER BY line_number").rows
            .map { "\(try $0.decode(Int64.self, 0)) \(try $0.decode(String.self, 1))" }
        #expect(lines == ["1 /p/1", "3 /p/3", "4 /p/4", "5 /p/5"])
        let reject = try fx.pg!.query("SELECT line_number, reason FROM \(s.loads).reject").rows
        #expect(reject.count == 1)
        #expect(try reject[0].decode(Int64.self, 0) == 2)
        #expect(try reject[0].decode(String.self, 1).hasPrefix("line too long"))
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE state = 'finished'") == 1)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file") == 1)  // the empty file waits
    }
}
