import ETLSupport
import Foundation
import PostgresClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

/// Reports as a function of their date, with real scheduler and worker processes: runs of two
/// dates at once against one date at a time, and a backfill rerun after later dates were loaded.
@Suite("Reports are a function of their date", .serialized, .timeLimit(.minutes(20)))
struct HistoryTests {
    static let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path
    static let dags = ["b2b", "ip2geo", "weblog", "monthly-sales", "popular-devices", "popular-products"]
    static let small = [
        "ETL_WEBLOG_LINES": "3000", "ETL_ORDERS": "8", "ETL_HISTORY_START": "2024-03-01", "ETL_WEBLOG_PARTS": "2",
        "ETL_WEBLOG_RANGE_MB": "1",
    ]

    func cluster(_ fx: PipelineFixture, name: String = #function) throws -> Cluster {
        let c = try Cluster.pipelines(fx, Self.small, name: name)
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker(["--concurrency", "2"])
        return c
    }

    static func date(_ d: String) -> Date { Date(timeIntervalSince1970: Double(Day(d)!.epochSeconds)) }

    /// Every report's datamart rows and CSV bytes for each date.
    func reports(_ fx: PipelineFixture, _ dates: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        let s = fx.settings
        for r in Reports.all {
            for d in dates {
                let rows = try fx.pg!.query(
                    "SELECT t::text FROM \(s.datamart).\(r.table) t WHERE logical_date = $1::date ORDER BY 1", [d]
                ).rows.map { try $0.decode(String.self, 0) }
                let csv = try String(contentsOfFile: Reports.csvPath(r, date: Day(d)!, settings: s), encoding: .utf8)
                out["\(r.name) \(d)"] = rows.joined(separator: "\n") + "\n--- csv ---\n" + csv
            }
        }
        return out
    }

    @Test(
        "every DAG run for two dates at once, in both orders: datamart rows and CSV bytes as one at a time"
    )
    func twoDatesAtOnce() throws {
        // Across a month's end, so that the two dates' 12-month windows differ (the later one reads the
        // earlier one's month).
        let dates = ["2024-06-30", "2024-07-01"]
        // One date at a time.
        let one = try PipelineFixture(extra: Self.small)
        do {
            let c = try cluster(one)
            defer { c.stopAll() }
            for d in dates {
                let runs = try Self.dags.map { try c.trigger($0, date: Self.date(d)) }
                for run in runs { #expect(try c.wait(run: run, timeout: 240) == .success, "\(c.logs())") }
            }
        }
        let expected = try reports(one, dates)
        #expect(expected.count == 6)
        #expect(expected["monthly-sales 2024-07-01"]?.split(separator: "\n").count ?? 0 >= 12 + 2 + 12)
        #expect(expected["monthly-sales 2024-06-30"] != expected["monthly-sales 2024-07-01"])
        #expect(expected["monthly-sales 2024-07-01"]?.contains("2024-06-01") == true)
        for order in [dates, dates.reversed()] {
            let fx = try PipelineFixture(extra: Self.small)
            let c = try cluster(fx)
            defer { c.stopAll() }
            // Both dates at once: reports first, so they wait in the scheduler for their inputs.
            var runs: [Int64] = []
            for dag in Self.dags.reversed() {
                for d in order { runs.append(try c.trigger(dag, date: Self.date(d))) }
            }
            for run in runs { #expect(try c.wait(run: run, timeout: 300) == .success, "\(c.logs())") }
            let got = try reports(fx, dates)
            for (key, want) in expected.sorted(by: { $0.key < $1.key }) {
                #expect(got[key] == want, "\(key) with the dates in order \(order):\n\(got[key] ?? "-")\nwant\n\(want)")
            }
        }
    }

    @Test("a backfill of 7 days, then the next day, then the 7 again with --rerun all: the 7 days' reports unchanged")
    func backfillIsStable() throws {
        let fx = try PipelineFixture(extra: Self.small)
        let c = try cluster(fx)
        defer { c.stopAll() }
        let week = (8...14).map { String(format: "2024-06-%02d", $0) }
        func backfill(_ from: String, _ to: String, _ extra: [String] = []) throws {
            for r in Reports.all {
                let out = try TestServices.run(
                    Self.etlctl, ["dags", "backfill", r.name, "--from", from, "--to", to] + extra, environment: c.env,
                    timeout: 600)
                #expect(out.status == 0, "\(r.name) \(from)..\(to) \(extra): \(out.stdout)\n\(out.stderr)\n\(c.logs())")
            }
        }
        try backfill(week[0], week[6])
        let first = try reports(fx, week)
        #expect(first.count == 21)
        // The next day: b2b loads one more export day, weblog one more file.
        try backfill("2024-06-15", "2024-06-15")
        let s = fx.settings
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).b2b_day WHERE day = '2024-06-15'") == 1)
        #expect(try reports(fx, week) == first)
        // Every report of the week computed again, after the later day was loaded: the same bytes.
        let mark = try fx.pg!.query("SELECT clock_timestamp()::text").rows[0].decode(String.self, 0)
        try backfill(week[0], week[6], ["--rerun", "all"])
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s.loads).report_computed WHERE computed_at > $1::timestamptz", [mark]) == 21)
        let again = try reports(fx, week)
        for (key, want) in first.sorted(by: { $0.key < $1.key }) { #expect(again[key] == want, "\(key)") }
        // Nothing is out of date, and etlctl says so.
        let list = try TestServices.run(Self.etlctl, ["reports", "list", "--out-of-date"], environment: c.env)
        #expect(list.status == 0 && list.stdout.contains("no report is out of date"), "\(list.stdout)\(list.stderr)")
        let marks = try TestServices.run(Self.etlctl, ["loads", "watermarks"], environment: c.env)
        #expect(
            marks.status == 0 && marks.stdout.contains("b2b") && marks.stdout.contains("2024-06-15"), "\(marks.stdout)")
        // The independent recomputation (Python, from the README's definitions and the export files)
        // agrees with every report of the 8 dates after the backfills.
        let check = try TestServices.run(
            "/usr/bin/python3", [TestServices.repoRoot.appendingPathComponent("scripts/check-reports").path],
            environment: c.env, timeout: 300)
        let oks = check.stdout.split(separator: "\n").filter { $0.contains(" ok (") }
        #expect(check.status == 0 && oks.count == 8 * 3, "\(check.stdout)\n\(check.stderr)")
    }
}
