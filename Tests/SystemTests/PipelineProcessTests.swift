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

/// The six DAGs through real scheduler and worker processes.
@Suite("Pipelines through the scheduler and workers", .serialized, .timeLimit(.minutes(10)))
struct PipelineProcessTests {
    func cluster(_ fx: PipelineFixture, _ extra: [String: String], name: String = #function) throws -> Cluster {
        try Cluster.pipelines(fx, extra, name: name)
    }

    @Test("the six DAGs run on generated data and produce the three reports")
    func sixDAGs() throws {
        let fx = try PipelineFixture()
        let c = try cluster(
            fx,
            [
                "ETL_WEBLOG_LINES": "20000", "ETL_ORDERS": "5", "ETL_HISTORY_START": "2023-06-01",
                "ETL_WEBLOG_PARTS": "2",
                "ETL_WEBLOG_RANGE_MB": "1",
            ])
        defer { c.stopAll() }
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try c.startWorker(["--concurrency", "2"])
        let date = Date(timeIntervalSince1970: 1_718_409_600)  // 2024-06-15
        // Reports first: they wait for their upstream DAGs without holding a worker.
        let reports = try ["monthly-sales", "popular-devices", "popular-products"].map { try c.trigger($0, date: date) }
        let ingestions = try ["b2b", "ip2geo", "weblog"].map { try c.trigger($0, date: date) }
        for run in ingestions + reports { #expect(try c.wait(run: run, timeout: 180) == .success, "\(c.logs())") }
        let s = fx.settings
        for (name, minRows) in [("monthly-sales", 12), ("popular-devices", 5), ("popular-products", 1)] {
            let path = "\(s.reportsDir)/\(name)/date=2024-06-15/report.csv"
            let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            #expect(lines.count >= minRows + 1, "\(name): \(lines)")
        }
        #expect(
            try fx.count("SELECT count(*) FROM \(s.datamart).monthly_sales WHERE logical_date = '2024-06-15'") == 12)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == 20_000)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE state <> 'finished'") == 0)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE pipeline = 'b2b'") == 6)
    }

    @Test(
        "a worker killed during a weblog load: the load resumes elsewhere, counts equal a clean run, no duplicate rows")
    func killedDuringLoad() throws {
        let fx = try PipelineFixture()
        let lines = 200_000
        // The test writes the log itself, with malformed lines mixed in: the generator's own count
        // of what it injected is the oracle (not the loader's parser).
        let generated = try WeblogGenerator(
            options: .init(lines: lines, seed: 11, end: 1_718_496_000, badRate: 0.01),
            b2bDir: fx.settings.b2bDir, ip2geoCSV: "\(fx.settings.sourcesDir)/data/ip2geo.csv"
        )
        .write(to: fx.settings.weblogDir)
        #expect(generated.lines == lines && generated.badLines > 0)
        let c = try cluster(
            fx,
            [
                "ETL_WEBLOG_LINES": "0", "ETL_WEBLOG_PARTS": "1", "ETL_WEBLOG_CHUNK_LINES": "5000",
                "ETL_WEBLOG_RANGE_MB": "8",
            ])
        defer { c.stopAll() }
        try c.startScheduler()
        let first = try c.startWorker(["--concurrency", "1"])
        let run = try c.trigger("weblog", date: Date(timeIntervalSince1970: 1_718_409_600))
        let s = fx.settings
        // Wait until some chunks are committed, then kill the worker mid-load.
        let deadline = monotonicSeconds() + 120
        var committed: Int64 = 0
        while monotonicSeconds() < deadline {
            committed = (try? fx.count("SELECT coalesce(sum(rows_read), 0)::bigint FROM \(s.loads).weblog_range")) ?? 0
            if committed >= 20_000 { break }
            usleep(20_000)
        }
        #expect(committed >= 20_000 && committed < Int64(lines), "load progress \(committed)")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        try c.startWorker(["--concurrency", "1"])
        #expect(try c.wait(run: run, timeout: 180) == .success, "\(c.logs())")

        // Every good line once, every injected bad line rejected once, as the generator counted them.
        let good = Int64(generated.lines - generated.badLines)
        let bad = Int64(generated.badLines)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file") == 1)
        #expect(try fx.count("SELECT count(*) FROM (SELECT DISTINCT line_number FROM \(s.loads).reject) r") == bad)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == good)
        #expect(
            try fx.count("SELECT count(*) FROM (SELECT DISTINCT file_id, line_number FROM \(s.datalake).weblogs) d")
                == good)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).reject") == bad)
        let load = try fx.pg!.query("SELECT rows_read, rows_loaded, rows_rejected, state FROM \(s.loads).load").rows[0]
        #expect(
            try load.decode(Int64.self, 0) == Int64(lines) && load.decode(Int64.self, 1) == good
                && load.decode(Int64.self, 2) == bad)
        #expect(try load.decode(String.self, 3) == "finished")
        // The message came back to the second worker, which resumed from the committed offset.
        let log = try c.store.pg.query(
            "SELECT string_agg(log, '') FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = 'load_part_0'",
            [run]
        )
        .rows[0].decode(String.self, 0)
        #expect(log.contains("resuming"), "\(log)")
    }
}
