import ETLSupport
import Foundation
import Metadata
import PostgresClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

@Suite("Run parameters through etlctl, the scheduler and workers", .serialized, .timeLimit(.minutes(8)))
struct ParamsTests {
    @Test(
        """
        a report's top N: another length is a report of its own (date=D/top=N), equal to the first N rows of \
        the default ranking, with the default CSV and datamart rows untouched, whether run by etlctl tasks test or \
        triggered through the scheduler; a wrong parameter is refused before any run is made; weblog's source \
        folder loads that folder's files once, and one leading outside the weblog folder is refused
        """)
    func parametersEndToEnd() throws {
        let settings = [
            "ETL_HISTORY_START": "2024-06-01", "ETL_ORDERS": "20", "ETL_WEBLOG_LINES": "4000",
            "ETL_WEBLOG_PARTS": "1",
        ]
        let fx = try PipelineFixture(extra: settings)
        let c = try Cluster.pipelines(fx, settings)
        defer { c.stopAll() }
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        let s = fx.settings
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        func etlctl(_ args: String...) throws -> TestServices.Output {
            try TestServices.run(bin, args, environment: c.env, timeout: 240)
        }
        func day(_ d: String) -> Date { Day(d)!.date }
        for dag in ["b2b", "weblog", "popular-devices"] {
            #expect(
                try c.wait(run: try c.trigger(dag, date: day("2024-06-15")), timeout: 240) == .success, "\(c.logs())")
        }
        let reports = "\(s.reportsDir)/popular-devices"
        let defaultCSV = try String(contentsOfFile: "\(reports)/date=2024-06-15/report.csv", encoding: .utf8)
        let lines = defaultCSV.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count >= 5, "a ranking of at least 3 rows to cut: \(defaultCSV)")
        func datamart(_ date: String) throws -> [String] {
            try c.store.pg.query(
                "SELECT rank || ',' || device || ',' || users || ',' || requests FROM \(s.datamart).popular_devices "
                    + "WHERE logical_date = $1::date ORDER BY rank", [date]
            ).rows.map { try $0.decode(String.self, 0) }
        }
        let rowsBefore = try datamart("2024-06-15")

        // etlctl tasks test --real --param top=2: its own file, the first two rows of the default one.
        let test = try etlctl(
            "tasks", "test", "popular-devices", "report", "--date", "2024-06-15", "--real", "--param", "top=2")
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
        #expect(test.stdout.contains("=== parameters: top=2"), "\(test.stdout)")
        let top2 = try String(contentsOfFile: "\(reports)/date=2024-06-15/top=2/report.csv", encoding: .utf8)
        #expect(top2 == lines.prefix(3).joined(separator: "\n") + "\n", "\(top2) vs \(defaultCSV)")
        #expect(try String(contentsOfFile: "\(reports)/date=2024-06-15/report.csv", encoding: .utf8) == defaultCSV)
        #expect(try datamart("2024-06-15") == rowsBefore)

        // Refused before any run is made, with the fix.
        for (param, says) in [("top=0", "1...100"), ("tpo=2", "no parameter tpo"), ("top", "NAME=VALUE")] {
            let out = try etlctl("dags", "trigger", "popular-devices", "--date", "2024-06-20", "--param", param)
            #expect(out.status == 1 && out.stderr.contains(says) && out.stderr.contains("Fix:"), "\(out.stderr)")
        }
        let outside = try etlctl("dags", "trigger", "weblog", "--date", "2024-06-20", "--param", "source=../..")
        #expect(outside.status == 1 && outside.stderr.contains("outside"), "\(outside.stderr)")
        #expect(
            try c.store.runRows(dag: nil, limit: 50).allSatisfy {
                !PostgresTimestamp.format($0.logicalDate).hasPrefix("2024-06-20")
            })

        // Through the scheduler and a worker: the run records it, writes only its own file.
        for dag in ["b2b", "weblog"] {
            #expect(try c.wait(run: try c.trigger(dag, date: day("2024-06-16")), timeout: 240) == .success)
        }
        let triggered = try etlctl(
            "dags", "trigger", "popular-devices", "--date", "2024-06-16", "--param", "top=3", "--wait")
        #expect(triggered.status == 0, "\(triggered.stdout)\(triggered.stderr)\(c.logs())")
        let run = try #require(try c.store.runRows(dag: "popular-devices", limit: 5).first)
        #expect(run.params == ["top": "3"] && run.type == .manual)
        let top3 = try String(contentsOfFile: "\(reports)/date=2024-06-16/top=3/report.csv", encoding: .utf8)
        #expect(top3.split(separator: "\n").count == 4, "\(top3)")
        #expect(!FileManager.default.fileExists(atPath: "\(reports)/date=2024-06-16/report.csv"))
        #expect(try datamart("2024-06-16").isEmpty)
        // It did not take the date's place: the default run for 06-16 is made and writes the default.
        let plain = try etlctl("dags", "trigger", "popular-devices", "--date", "2024-06-16", "--wait")
        #expect(plain.status == 0, "\(plain.stdout)\(plain.stderr)")
        let default16 = try String(contentsOfFile: "\(reports)/date=2024-06-16/report.csv", encoding: .utf8)
        #expect(top3 == default16.split(separator: "\n").prefix(4).joined(separator: "\n") + "\n", "\(default16)")
        #expect(try datamart("2024-06-16").count == default16.split(separator: "\n").count - 1)
        #expect(try String(contentsOfFile: "\(reports)/date=2024-06-16/top=3/report.csv", encoding: .utf8) == top3)
        let twiceTop3 = try etlctl("dags", "trigger", "popular-devices", "--date", "2024-06-16", "--param", "top=3")
        #expect(twiceTop3.status == 1 && twiceTop3.stderr.contains("already has a run for 2024-06-16 with top=3"))
        // The same report for the same date and length, computed later by another way: the same bytes.
        let again = try etlctl(
            "tasks", "test", "popular-devices", "report", "--date", "2024-06-16", "--real", "--param", "top=3")
        #expect(again.status == 0, "\(again.stdout)")
        #expect(try String(contentsOfFile: "\(reports)/date=2024-06-16/top=3/report.csv", encoding: .utf8) == top3)

        // weblog source=archive: that folder's files too, once; the run's own day as a default run's.
        let archive = "\(s.weblogDir)/archive"
        try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: true)
        let old = try WeblogGenerator(
            options: .init(lines: 500, seed: 99, end: Day("2024-06-12")!.epochSeconds),
            b2bDir: s.b2bDir, ip2geoCSV: "\(s.sourcesDir)/data/ip2geo.csv"
        ).write(to: archive)
        func archived() throws -> Int64 {
            try fx.count(
                "SELECT count(*) FROM \(s.datalake).weblogs WHERE requested_at < '2024-06-12T00:00:00Z'::timestamptz")
        }
        #expect(try archived() == 0)
        let loaded = try etlctl(
            "dags", "trigger", "weblog", "--date", "2024-06-17", "--param", "source=archive", "--wait")
        #expect(loaded.status == 0, "\(loaded.stdout)\(loaded.stderr)\(c.logs())")
        #expect(try archived() == Int64(old.lines))
        #expect(
            try fx.count("SELECT count(*) FROM \(s.loads).weblog_file WHERE path LIKE '%/archive/access_log%'") == 1)
        let generatedFor17 = "\(s.weblogDir)/\(WeblogGenerator.fileName(end: Day("2024-06-18")!.epochSeconds))"
        #expect(FileManager.default.fileExists(atPath: generatedFor17), "the day's own file, as without source")
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s.datalake).weblogs WHERE requested_at >= '2024-06-17T00:00:00Z'::timestamptz"
                    + " AND requested_at < '2024-06-18T00:00:00Z'::timestamptz") > 0)
        #expect(
            try c.store.runRows(dag: "weblog", limit: 5).first?.params == ["source": "archive"])
        let twice = try etlctl(
            "dags", "trigger", "weblog", "--date", "2024-06-18", "--param", "source=archive", "--wait")
        #expect(twice.status == 0, "\(twice.stdout)\(twice.stderr)")
        #expect(try archived() == Int64(old.lines))

        // A link inside the weblog folder that leads out of it: refused where the run is made, by
        // etlctl tasks test too; the folder itself is not a folder inside it.
        try FileManager.default.createSymbolicLink(atPath: "\(s.weblogDir)/out", withDestinationPath: "/tmp")
        let escape = try etlctl("dags", "trigger", "weblog", "--date", "2024-06-21", "--param", "source=out")
        #expect(escape.status == 1 && escape.stderr.contains("leads outside"), "\(escape.stderr)")
        let escapeTest = try etlctl(
            "tasks", "test", "weblog", "register_files", "--date", "2024-06-21", "--real", "--param", "source=out")
        #expect(escapeTest.status == 1 && escapeTest.stderr.contains("leads outside"), "\(escapeTest.stderr)")
        let itself = try etlctl("dags", "trigger", "weblog", "--date", "2024-06-21", "--param", "source=.")
        #expect(itself.status == 1 && itself.stderr.contains("itself"), "\(itself.stderr)")
        // A file in the source folder that is a link out of it is not read.
        try FileManager.default.createDirectory(atPath: "\(s.weblogDir)/linked", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: "\(s.weblogDir)/linked/access_log_secret.log", withDestinationPath: old.path)
        let linked = try etlctl(
            "dags", "trigger", "weblog", "--date", "2024-06-22", "--param", "source=linked", "--wait")
        #expect(linked.status == 0, "\(linked.stdout)\(linked.stderr)")
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file WHERE path LIKE '%/linked/%'") == 0)
        let log = try etlctl("logs", "weblog", "register_files")
        #expect(log.stdout.contains("access_log_secret.log leads outside"), "\(log.stdout)")
        let listed = try etlctl("dags", "params", "weblog")
        #expect(listed.status == 0 && listed.stdout.contains("source") && listed.stdout.contains("manual only"))
    }
}
