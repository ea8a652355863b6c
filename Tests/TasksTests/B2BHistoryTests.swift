import ETLSupport
import Foundation
import PostgresClient
import TestSupport
import Testing

@testable import Tasks

/// The b2b history against a real Postgres: the platform's generated daily exports loaded
/// incrementally, compared with a load from scratch and with the export files themselves.
@Suite("B2B history: incremental loads and type-2 dimensions", .serialized, .timeLimit(.minutes(10)))
struct B2BHistoryTests {
    static let start = Day("2024-01-01")!
    static let day = Day("2024-03-30")!
    static var next: Day { Day(daysSince1970: day.daysSince1970 + 1) }

    func fixture(_ name: String = #function) throws -> PipelineFixture {
        try PipelineFixture(name: name, extra: ["ETL_HISTORY_START": Self.start.description])
    }

    @discardableResult
    func export(_ fx: PipelineFixture, upTo last: Day) throws -> PlatformHistory.Summary {
        try PlatformHistory.export(upTo: last, ordersPerDay: 30, seed: 5, settings: fx.settings)
    }

    func load(_ fx: PipelineFixture, upTo last: Day, run: Int64 = 1) throws -> B2BLoad.Result {
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { pg.close() }
        return try B2BLoad.load(pg: pg, settings: fx.settings, runID: run, upTo: last, log: { _ in })
    }

    /// Each b2b table's row count and a checksum of its sorted rows.
    func tables(_ fx: PipelineFixture, where condition: String = "true") throws -> [String: String] {
        var out: [String: String] = [:]
        for t in ["company", "product", "inventory", "customer"] {
            out[t] = try digest(fx, "SELECT t::text AS r FROM \(fx.settings.datalake).\(t) t")
        }
        for t in ["orders", "sales"] {
            out[t] = try digest(fx, "SELECT t::text AS r FROM \(fx.settings.datalake).\(t) t WHERE \(condition)")
        }
        return out
    }

    func digest(_ fx: PipelineFixture, _ rows: String) throws -> String {
        try fx.pg!.query(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '-') FROM (\(rows)) x"
        ).rows[0].decode(String.self, 0)
    }

    /// A CSV file's rows after its header (fields may be quoted, with doubled quotes inside).
    func lines(_ path: String) throws -> [[String]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").dropFirst().map { line in
            let chars = Array(line)
            var fields: [String] = []
            var field = ""
            var quoted = false
            var i = 0
            while i < chars.count {
                let c = chars[i]
                if c == "\"" && quoted && i + 1 < chars.count && chars[i + 1] == "\"" {
                    field.append(c)
                    i += 1
                } else if c == "\"" {
                    quoted.toggle()
                } else if c == "," && !quoted {
                    fields.append(field)
                    field = ""
                } else {
                    field.append(c)
                }
                i += 1
            }
            fields.append(field)
            return fields
        }
    }

    @Test("a run for the next day adds only that day's orders; the tables equal a from-scratch load of both days")
    func incrementalEqualsFromScratch() throws {
        let a = try fixture()
        try export(a, upTo: Self.day)
        let first = try load(a, upTo: Self.day)
        let days = Self.day.daysSince1970 - Self.start.daysSince1970 + 1
        #expect(first.daysLoaded.count == days && first.daysLoaded.first == Self.start)
        let s = a.settings
        let ordersBefore = try a.count("SELECT count(*) FROM \(s.datalake).orders")
        let oldDays = try tables(a, where: "export_day <= '\(Self.day)'")

        // The next day: exported and loaded alone.
        let more = try export(a, upTo: Self.next)
        #expect(more.days == 1 && more.first == Self.next)
        let second = try load(a, upTo: Self.next, run: 2)
        #expect(second.daysLoaded == [Self.next] && second.daysReplaced.isEmpty)
        let inFile = try lines("\(PlatformHistory.dayDir(Self.next, s))/orders.csv").count
        #expect(inFile == 30)
        #expect(try a.count("SELECT count(*) FROM \(s.datalake).orders") == ordersBefore + Int64(inFile))
        #expect(
            try a.count("SELECT count(*) FROM \(s.datalake).orders WHERE export_day = '\(Self.next)'") == Int64(inFile))
        // The days loaded before are untouched (their facts the same rows).
        let after = try tables(a, where: "export_day <= '\(Self.day)'")
        #expect(after["orders"] == oldDays["orders"] && after["sales"] == oldDays["sales"])
        // Loading again (a redelivered task, a retry) adds nothing.
        let whole = try tables(a)
        let again = try load(a, upTo: Self.next, run: 3)
        #expect(again.daysLoaded.isEmpty && again.daysReplaced.isEmpty)
        #expect(try tables(a) == whole)

        // From scratch: both days exported and loaded at once, in another schema and folder.
        let b = try fixture()
        try export(b, upTo: Self.next)
        let once = try load(b, upTo: Self.next)
        #expect(once.daysLoaded.count == days + 1)
        let scratch = try tables(b)
        #expect(scratch == whole, "incremental \(whole)\nfrom scratch \(scratch)")
        #expect(try b.count("SELECT count(*) FROM \(b.settings.loads).b2b_day") == Int64(days + 1))
        // The load metadata counts what the merge did.
        let counts = try a.pg!.query(
            """
            SELECT sum(rows_inserted)::bigint, sum(rows_updated)::bigint, sum(rows_unchanged)::bigint
            FROM \(s.loads).load WHERE pipeline = 'b2b' AND source LIKE '%customer.csv%'
            """
        ).rows[0]
        #expect(try counts.decode(Int64.self, 0) > 0 && counts.decode(Int64.self, 1) > 0)
    }

    @Test("type 2: each changed customer and catalog row has the version of the day it changed, as in the files")
    func slowlyChangingDimensions() throws {
        let fx = try fixture()
        try export(fx, upTo: Self.day)
        _ = try load(fx, upTo: Self.day)
        let s = fx.settings
        // Replay the files independently: each customer's country by day, and catalog removals.
        var country: [String: String] = [:]
        for row in try lines("\(s.b2bDir)/customer.csv") { country[row[0]] = row[4] }
        var changes: [(doc: String, day: Day, old: String?, new: String)] = []
        var removals: [(key: String, day: Day)] = []
        var d = Self.start
        while d <= Self.day {
            let dir = PlatformHistory.dayDir(d, s)
            if let rows = try? lines("\(dir)/customer.csv") {
                for row in rows {
                    if country[row[0]] != row[4] { changes.append((row[0], d, country[row[0]], row[4])) }
                    country[row[0]] = row[4]
                }
            }
            if let rows = try? lines("\(dir)/inventory_removed.csv") {
                for row in rows { removals.append(("\(row[0])/\(row[1])", d)) }
            }
            d = Day(daysSince1970: d.daysSince1970 + 1)
        }
        let moved = changes.filter { $0.old != nil }
        #expect(moved.count >= 3, "customers who moved country: \(moved.count)")
        #expect(removals.count >= 3, "catalog rows removed: \(removals.count)")
        let asOf = { (doc: String, day: Day) throws -> String? in
            try fx.pg!.query(
                """
                SELECT country_code FROM \(s.datalake).customer
                WHERE document_number = $1 AND valid_from <= $2::date AND $2::date < valid_to
                """, [doc, day.description]
            ).rows.first?.decode(String.self, 0)
        }
        for c in moved.prefix(20) {
            let before = Day(daysSince1970: c.day.daysSince1970 - 1)
            #expect(try asOf(c.doc, before) == c.old, "customer \(c.doc) on \(before)")
            #expect(try asOf(c.doc, c.day) == c.new, "customer \(c.doc) on \(c.day)")
        }
        // A removed catalog row has an end date: not valid on its removal day.
        for r in removals.prefix(20) {
            let parts = r.key.split(separator: "/").map(String.init)
            let ended = try fx.count(
                """
                SELECT count(*) FROM \(s.datalake).inventory
                WHERE company_cuit = $1 AND product_id = $2::int AND valid_to = $3::date
                """, [parts[0], parts[1], r.day.description])
            #expect(ended == 1, "catalog row \(r.key) removed on \(r.day)")
        }
        // Exactly one current version per key.
        #expect(
            try fx.count(
                """
                SELECT count(*) FROM (SELECT document_number FROM \(s.datalake).customer
                WHERE valid_to = 'infinity' GROUP BY 1 HAVING count(*) > 1) x
                """) == 0)
    }

    @Test("a re-exported day replaces that day's orders only, and the reports that read it are shown out of date")
    func reExportedDay() throws {
        let fx = try fixture()
        try export(fx, upTo: Self.day)
        _ = try load(fx, upTo: Self.day)
        let s = fx.settings
        // Reports for the date, computed now.
        for r in Reports.all { _ = try Reports.run(r, date: Self.day, tx: fx.pg!, settings: s) }
        #expect(try Freshness.computed(pg: fx.pg!, settings: s).allSatisfy { $0.outOfDate.isEmpty })
        let otherDays = try tables(fx, where: "export_day <> '2024-02-10'")
        // 2024-02-10 re-exported without its first order (and that order's sales lines).
        let dir = PlatformHistory.dayDir(Day("2024-02-10")!, s)
        let orders = try String(contentsOfFile: "\(dir)/orders.csv", encoding: .utf8).split(separator: "\n")
        let dropped = String(orders[1].split(separator: ",")[0])
        try (orders.enumerated().filter { $0.offset != 1 }.map { String($0.element) }.joined(separator: "\n") + "\n")
            .write(toFile: "\(dir)/orders.csv", atomically: true, encoding: .utf8)
        let sales = try String(contentsOfFile: "\(dir)/sales.csv", encoding: .utf8).split(separator: "\n")
        let keptSales = sales.filter { !$0.hasPrefix("\(dropped),") }
        try (keptSales.joined(separator: "\n") + "\n").write(
            toFile: "\(dir)/sales.csv", atomically: true, encoding: .utf8)
        let r = try load(fx, upTo: Self.day, run: 2)
        #expect(r.daysReplaced == [Day("2024-02-10")!] && r.daysLoaded.isEmpty)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).orders WHERE export_day = '2024-02-10'") == 29)
        #expect(
            try fx.count("SELECT count(*) FROM \(s.datalake).sales WHERE export_day = '2024-02-10'")
                == Int64(keptSales.count - 1))
        #expect(try tables(fx, where: "export_day <> '2024-02-10'") == otherDays)
        // monthly-sales and popular-products for 2024-03-30 read February: out of date, naming the day;
        // popular-devices reads no orders: current.
        let status = Dictionary(
            uniqueKeysWithValues: try Freshness.computed(pg: fx.pg!, settings: s).map { ($0.report, $0.outOfDate) })
        #expect(status["monthly-sales"]?.first?.contains("b2b day 2024-02-10") == true, "\(status)")
        #expect(status["popular-products"]?.isEmpty == false && status["popular-devices"]?.isEmpty == true)
        // Recomputed, it is current again.
        _ = try Reports.run(Reports.monthlySales, date: Self.day, tx: fx.pg!, settings: s)
        #expect(
            try Freshness.computed(pg: fx.pg!, settings: s, report: "monthly-sales").first?.outOfDate.isEmpty == true)
    }

    @Test("loaded days whose export folders were archived stay as loaded: a missing folder is not a re-export")
    func archivedExports() throws {
        let fx = try fixture()
        try export(fx, upTo: Self.day)
        _ = try load(fx, upTo: Self.day)
        let whole = try tables(fx)
        let s = fx.settings
        let fm = FileManager.default
        for d in [Self.start, Day("2024-02-10")!] {
            try fm.moveItem(atPath: PlatformHistory.dayDir(d, s), toPath: "\(fx.path)/archived-\(d)")
        }
        let r = try load(fx, upTo: Self.day, run: 2)
        #expect(r.daysLoaded.isEmpty && r.daysReplaced.isEmpty)
        #expect(try tables(fx) == whole)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).b2b_day WHERE replaced_at IS NOT NULL") == 0)
        // The next day's export, as generate_orders makes it, with other settings (more orders a
        // day): the archived days are in the ledger, so they are not written again from today's
        // settings, and the load adds only the new day.
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { pg.close() }
        let loaded = try B2BLoad.loadedDays(pg: pg, s)
        #expect(loaded.count == Self.day.daysSince1970 - Self.start.daysSince1970 + 1)
        let more = try PlatformHistory.export(upTo: Self.next, ordersPerDay: 60, seed: 5, settings: s, loaded: loaded)
        #expect(more.days == 1 && more.first == Self.next && more.archived == 2)
        for d in [Self.start, Day("2024-02-10")!] { #expect(!fm.fileExists(atPath: PlatformHistory.dayDir(d, s))) }
        let r2 = try load(fx, upTo: Self.next, run: 3)
        #expect(r2.daysLoaded == [Self.next] && r2.daysReplaced.isEmpty)
        let before = try tables(fx, where: "export_day <= '\(Self.day)'")
        #expect(before["orders"] == whole["orders"] && before["sales"] == whole["sales"])
        // A day not loaded yet still has to be there.
        let third = Day(daysSince1970: Self.next.daysSince1970 + 1)
        _ = try PlatformHistory.export(upTo: third, ordersPerDay: 60, seed: 5, settings: s, loaded: loaded)
        try fm.removeItem(atPath: PlatformHistory.dayDir(third, s))
        let e = #expect(throws: PipelineError.self) { try load(fx, upTo: third, run: 4) }
        #expect("\(e.map { "\($0)" } ?? "")".contains("export for \(third) is missing"))
    }

    @Test("ETL_HISTORY_START moved after a first load: refused, naming the loaded history's start")
    func historyStartMoved() throws {
        let fx = try fixture()
        try export(fx, upTo: Day("2024-01-05")!)
        _ = try load(fx, upTo: Day("2024-01-05")!)
        var moved = fx.settings
        moved.historyStart = Day("2023-12-20")!
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { pg.close() }
        let e = #expect(throws: PipelineError.self) {
            try B2BLoad.load(pg: pg, settings: moved, runID: 2, upTo: Day("2024-01-06")!, log: { _ in })
        }
        #expect("\(e.map { "\($0)" } ?? "")".contains("set ETL_HISTORY_START=2024-01-01"))
        #expect(try fx.count("SELECT count(*) FROM \(fx.settings.loads).b2b_day") == 5)
    }

    @Test("a b2b run for a day before the history's start is refused, naming the setting")
    func beforeHistory() throws {
        let fx = try fixture()
        let e = #expect(throws: PipelineError.self) { try load(fx, upTo: Day("2023-12-31")!) }
        #expect("\(e.map { "\($0)" } ?? "")".contains("ETL_HISTORY_START=2024-01-01"))
    }
}
