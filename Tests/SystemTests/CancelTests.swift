import ETLSupport
import Foundation
import Metadata
import PostgresClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

@Suite("Cancelling tasks", .serialized, .timeLimit(.minutes(5)))
struct CancelTests {
    /// The three long tasks of example_cancel, each waiting somewhere else.
    static let long = ["in_own", "in_attempt", "in_loop"]

    @Test(
        """
        etlctl tasks cancel stops a task waiting in a statement on its own connection, in one on the \
        attempt's connection, or in its own code: within seconds, by its worker, its uncommitted rows \
        rolled back and its committed ones kept, recorded cancelled and not retried, while the quick \
        task of the same batch runs once and what depends on a cancelled task is upstream-failed
        """)
    func cancelEachKindOfWait() throws {
        // The scheduler's own ending of cancelled attempts waits 60 s: every stop seen here is the worker's.
        let c = try Cluster(extra: ["ETL_LEASE_TTL": "4", "ETL_CANCEL_GRACE": "60"])
        defer { c.stopAll() }
        try c.startScheduler()
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        let run = try c.trigger("example_cancel")
        // One slot: the run's four first tasks come in one batch, one after another (queued before
        // the worker starts, so that its first fetch takes them together).
        try c.waitFor("the first four queued", timeout: 30) {
            try c.store.instances(run: run).values.filter { $0.state == .queued }.count == 4
        }
        try c.startWorker(["--concurrency", "1"])
        func rows(_ phase: String, _ task: String? = nil) throws -> Int {
            try c.store.pg.query(
                """
                SELECT count(*) FROM \(c.schema).example_execution
                WHERE run_id = $1 AND phase = $2 AND ($3::text IS NULL OR task_id = $3)
                """, [run, phase, task]
            ).rows[0].decode(Int.self, 0)
        }
        var took: [String: Double] = [:]
        for _ in Self.long {
            var task = ""
            try c.waitFor("a long task of example_cancel waiting", timeout: 40) {
                // Every task of the batch is `running` from its start; the one in its wait is the
                // one that committed its row (whichever the batch took first).
                let states = try c.store.instances(run: run)
                let waiting = try Self.long.filter { states[$0]?.state == .running && took[$0] == nil }
                    .filter { try rows("committed", $0) == 1 }
                guard let t = waiting.first else { return false }
                task = t
                return true
            }
            usleep(500_000)  // well inside its wait
            let start = monotonicSeconds()
            let out = try TestServices.run(
                bin, ["tasks", "cancel", "example_cancel", task, "--run", "\(run)", "--wait"], environment: c.env)
            took[task] = monotonicSeconds() - start
            #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
            #expect(out.stdout.contains("cancelling \(task) of run \(run)"), "\(out.stdout)")
            #expect(out.stdout.contains("\(task) of run \(run): cancelled (cancelled by etlctl"), "\(out.stdout)")
        }
        print("cancel to stopped, seconds: \(took.sorted { $0.key < $1.key })")
        #expect(try c.wait(run: run, timeout: 40) == .failed)
        let states = try c.store.instances(run: run)
        for t in Self.long {
            #expect(states[t]?.state == .cancelled, "\(t): \(String(describing: states[t]))")
            // Stopped by its worker well before the scheduler's 60 s.
            #expect((took[t] ?? 99) < 15, "\(t) took \(took[t] ?? -1) s")
        }
        #expect(states["quick"]?.state == .success)
        #expect(states["after"]?.state == .upstreamFailed)
        // Committed rows stay, uncommitted ones (on its own connection or in the attempt's
        // transaction) are gone; the quick task of the same batch wrote once.
        #expect(try rows("committed") == 3)
        #expect(try rows("uncommitted") == 0)
        #expect(try c.effects(run: run).map(\.task) == ["quick"])
        // One try each, never retried though retries were left; its worker recorded why.
        let attempts = try c.store.pg.query(
            """
            SELECT task_id, count(*), min(state), max(state), min(error), bool_and(log LIKE '%cancelled by etlctl%'),
              bool_or(log LIKE '%scheduler ended%')
            FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = ANY($2::text[]) GROUP BY task_id
            """, [run, PostgresArray(Self.long)]
        ).rows
        #expect(attempts.count == 3)
        for a in attempts {
            let task = try a.decode(String.self, 0)
            #expect(try a.decode(Int.self, 1) == 1, "\(task) ran more than once")
            #expect(try a.decode(String.self, 2) == "cancelled" && a.decode(String.self, 3) == "cancelled", "\(task)")
            #expect(try a.decode(String.self, 4).hasPrefix("cancelled by etlctl"), "\(task)")
            #expect(try a.decode(Bool.self, 5), "\(task)'s log says who cancelled it")
            #expect(try !a.decode(Bool.self, 6), "\(task) was stopped by its worker, not the scheduler")
        }
        // Cancelling an ended task changes nothing; an unknown task is refused with the fix.
        let again = try TestServices.run(
            bin, ["tasks", "cancel", "example_cancel", "quick", "--run", "\(run)"], environment: c.env)
        #expect(again.status == 0 && again.stdout.contains("had ended already (success)"), "\(again.stdout)")
        let unknown = try TestServices.run(
            bin, ["tasks", "cancel", "example_cancel", "nope", "--run", "\(run)"], environment: c.env)
        #expect(unknown.status == 1 && unknown.stderr.contains("Fix:"), "\(unknown.stderr)")
        // Retrying a cancelled task runs it again (here: cancelled again before it runs long).
        let retry = try TestServices.run(
            bin, ["tasks", "retry", "example_cancel", "in_loop", "--run", "\(run)"], environment: c.env)
        #expect(retry.status == 0, "\(retry.stderr)")
        try c.waitFor("in_loop running again") { try c.store.instances(run: run)["in_loop"]?.tryNumber == 2 }
    }

    @Test(
        """
        a b2b load cancelled half-way: it stops within seconds, the day it was loading rolls back (every \
        loaded day whole, the ledger matching the tables), its load records say it was cancelled, it is \
        not retried; a retry resumes from the committed days and the tables equal a clean load
        """)
    func cancelB2BLoadHalfWay() throws {
        let settings = ["ETL_HISTORY_START": "2023-06-01", "ETL_ORDERS": "150"]
        let fx = try PipelineFixture(extra: settings)
        let c = try Cluster.pipelines(fx, settings)
        defer { c.stopAll() }
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        let day = Day("2024-06-15")!
        let run = try c.trigger("b2b", date: Date(timeIntervalSince1970: 1_718_409_600))
        let s = fx.settings
        let days = day.daysSince1970 - s.historyStart.daysSince1970 + 1
        func loaded() throws -> Int64 { try fx.count("SELECT count(*) FROM \(s.loads).b2b_day") }
        try c.waitFor("the load is under way", timeout: 120) { ((try? loaded()) ?? 0) >= Int64(days / 10) }
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        let start = monotonicSeconds()
        let out = try TestServices.run(
            bin, ["tasks", "cancel", "b2b", "load_tables", "--run", "\(run)", "--wait"], environment: c.env)
        let took = monotonicSeconds() - start
        print("cancel: the b2b load stopped \(Int(took * 10) / 10) s after etlctl tasks cancel")
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        #expect(took < 15)
        #expect(try c.wait(run: run, timeout: 30) == .failed)
        let atCancel = try loaded()
        #expect(atCancel < Int64(days), "the load ended before the cancel")
        // Every loaded day is whole, and only loaded days have rows: the day under way rolled back.
        for (table, column) in [("orders", "orders"), ("sales", "sales_lines")] {
            #expect(
                try fx.count("SELECT count(*) FROM \(s.datalake).\(table)")
                    == fx.count("SELECT coalesce(sum(\(column)), 0)::bigint FROM \(s.loads).b2b_day"), "\(table)")
        }
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE pipeline = 'b2b' AND state = 'running'") == 0)
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s.loads).load WHERE pipeline = 'b2b' AND state = 'broken' AND error LIKE $1",
                ["cancelled by etlctl%"]) == Int64(B2B.tables.count))
        sleepSeconds(3)
        #expect(try loaded() == atCancel, "the load went on after the cancel")
        let states = try c.store.instances(run: run)
        #expect(states["load_tables"]?.state == .cancelled)
        #expect(states["load_tables"]?.tryNumber == 1, "a cancelled task is not retried")
        // A retry resumes: the days committed before the cancel are not loaded again.
        let retry = try TestServices.run(
            bin, ["tasks", "retry", "b2b", "load_tables", "--run", "\(run)"], environment: c.env)
        #expect(retry.status == 0, "\(retry.stderr)")
        #expect(try c.wait(run: run, timeout: 240) == .success, "\(c.logs())")
        #expect(try loaded() == Int64(days))
        let got = try fx.b2bDigests()
        let clean = try PipelineFixture(name: #function + "Clean", extra: settings)
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { pg.close() }
        try PlatformHistory.export(upTo: day, ordersPerDay: 150, seed: clean.settings.seed, settings: clean.settings)
        _ = try B2BLoad.load(pg: pg, settings: clean.settings, runID: 1, upTo: day, log: { _ in })
        #expect(got == (try clean.b2bDigests()))
    }

    @Test(
        """
        cancelling a task that waits in a batch behind another's statement on the slot's session leaves that \
        statement alone: the first task succeeds once, the cancelled one ends without running
        """)
    func cancelBehindABatchMate() throws {
        let c = try Cluster(extra: ["ETL_LEASE_TTL": "4", "ETL_CANCEL_GRACE": "60"])
        defer { c.stopAll() }
        try c.startScheduler()
        let run = try c.trigger("example_cancel_mate")
        // Both in the queue before the worker starts, so that its first fetch takes them together
        // (a worker blocked on the queue may be handed the first message of an enqueue alone).
        try c.waitFor("both tasks queued", timeout: 30) {
            try c.store.instances(run: run).values.allSatisfy { $0.state == .queued }
        }
        try c.startWorker(["--concurrency", "1"])
        try c.waitFor("the sleeper's statement under way", timeout: 30) {
            try c.store.pg.query(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep($1)%'"
            ).rows[0].decode(Int.self, 0) > 0 && c.store.instances(run: run)["victim"]?.state == .running
        }
        let out = try TestServices.run(
            Cluster.binDir.appendingPathComponent("etlctl").path,
            ["tasks", "cancel", "example_cancel_mate", "victim", "--run", "\(run)", "--wait"], environment: c.env)
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        #expect(try c.wait(run: run, timeout: 30) == .failed)
        let states = try c.store.instances(run: run)
        #expect(states["sleeper"]?.state == .success && states["sleeper"]?.tryNumber == 1, "\(c.logs())")
        #expect(states["victim"]?.state == .cancelled)
        #expect(try c.effects(run: run).map(\.task) == ["sleeper"])
        #expect(
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).example_execution WHERE run_id = $1 AND task_id = 'victim'", [run]
            ).rows[0].decode(Int.self, 0) == 0, "the cancelled task ran")
    }

    @Test(
        """
        A task whose worker is frozen when it is cancelled is ended by the scheduler after \
        ETL_CANCEL_GRACE, its sessions ended (its uncommitted row rolled back), and not taken over
        """)
    func frozenWorkersCancelEndsAtTheScheduler() throws {
        let c = try Cluster(extra: ["ETL_LEASE_TTL": "4", "ETL_CANCEL_GRACE": "3"])
        defer { c.stopAll() }
        try c.startScheduler()
        let w = try c.startWorker(["--concurrency", "1"])
        let run = try c.trigger("example_cancel")
        var task = ""
        try c.waitFor("a long task of example_cancel waiting", timeout: 40) {
            // The batch's tasks are all running as far as the table says: the one whose code runs
            // has written its committed row.
            let states = try c.store.instances(run: run)
            let executing = try c.store.pg.query(
                "SELECT DISTINCT task_id FROM \(c.schema).example_execution WHERE run_id = $1", [run]
            ).rows.map { try $0.decode(String.self, 0) }
            guard let t = executing.first(where: { states[$0]?.state == .running }) else { return false }
            task = t
            return true
        }
        usleep(300_000)
        kill(w.processIdentifier, SIGSTOP)
        defer { kill(w.processIdentifier, SIGCONT) }
        // A second worker, awake: it must not take the cancelled attempt over when the lease expires.
        try c.startWorker(["--concurrency", "1"])
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        let out = try TestServices.run(
            bin, ["tasks", "cancel", "example_cancel", task, "--run", "\(run)", "--wait"], environment: c.env)
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        #expect(try c.store.instances(run: run)[task]?.state == .cancelled)
        let log = try c.store.pg.query(
            "SELECT log, worker FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = $2", [run, task]
        ).rows
        #expect(log.count == 1)
        #expect(try log[0].decode(String.self, 0).contains("the scheduler ended its sessions"))
        #expect(
            try c.store.pg.query(
                "SELECT count(*) FROM \(c.schema).example_execution WHERE run_id = $1 AND task_id = $2 AND phase = $3",
                [run, task, "uncommitted"]
            ).rows[0].decode(Int.self, 0) == 0)
        // Its sessions are gone (its own connection's backend was ended).
        #expect(
            try c.store.pg.query(
                """
                SELECT count(*) FROM pg_stat_activity a JOIN \(c.schema).example_execution e
                  ON e.backend_pid = a.pid WHERE e.run_id = $1 AND e.task_id = $2
                """, [run, task]
            ).rows[0].decode(Int.self, 0) == 0)
    }
}
