import ETLSupport
import Foundation
import PostgresClient
import TestSupport
import Testing
import Workflow

@Suite("Retention", .serialized, .timeLimit(.minutes(5)))
struct RetentionTests {
    @Test(
        """
        etlctl db clean --older-than 90d: --dry-run counts and deletes nothing; then old finished runs with their \
        task instances and attempts, old alerts, old rejects, old load records no ledger needs and old dead \
        letters go, while each DAG's newest run, unfinished runs, recent rows and ledger-referenced loads stay; \
        ETL_RETENTION_DAYS makes the leading scheduler do it
        """)
    func cleanOldRows() throws {
        let fx = try PipelineFixture()
        let c = try Cluster(
            extra: fx.values.merging(["ETL_PIPELINE_DAGS": "true", "ETL_PIPELINE_SCHEDULE": "none"]) { _, x in x })
        defer { c.stopAll() }
        let s = c.schema
        let loads = fx.settings.loads
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        func ctl(_ args: [String], _ env: [String: String]? = nil) throws -> TestServices.Output {
            try TestServices.run(bin, args, environment: env ?? c.env)
        }
        // The loads tables, as the b2b DAG's first task makes them.
        #expect(try ctl(["tasks", "test", "b2b", "create_tables", "--real", "--date", "2024-06-01"]).status == 0)
        try c.startScheduler()
        try c.startWorker()
        var diamond: [Int64] = []
        for day in 1...3 {
            let run = try c.trigger(
                "example_diamond", date: Date(timeIntervalSince1970: 1_717_200_000 + Double(day) * 86_400))
            #expect(try c.wait(run: run) == .success)
            diamond.append(run)
        }
        let failed = try c.trigger("example_retry_out")
        #expect(try c.wait(run: failed) == .failed)
        // Two diamond runs and the failed one ended 100 days ago; the failed one is its DAG's newest.
        try c.store.pg.query(
            "UPDATE \(s).dag_run SET ended_at = now() - interval '100 days', created_at = now() - interval '101 days' "
                + "WHERE run_id = ANY($1::bigint[])",
            [PostgresArray([diamond[0], diamond[1], failed].map(String.init))])
        try c.store.pg.query(
            """
            INSERT INTO \(s).alert (key, kind, message, created_at) VALUES
              ('old', 'run_failed', 'old', now() - interval '100 days'), ('new', 'run_failed', 'new', now())
            """)
        let ids = try c.store.pg.query(
            """
            INSERT INTO \(loads).load (pipeline, source, state, started_at, finished_at) VALUES
              ('b2b', 'old', 'finished', now() - interval '100 days', now() - interval '100 days'),
              ('weblog', 'old, in the ledger', 'finished', now() - interval '100 days', now() - interval '100 days'),
              ('b2b', 'new', 'finished', now(), now())
            RETURNING id
            """
        ).rows.map { try $0.decode(Int64.self, 0) }
        try c.store.pg.query(
            """
            INSERT INTO \(loads).weblog_file (name, path, size, checksum, lines, state, load_id)
            VALUES ('access_log', '/x/access_log', 10, 'c', 1, 'loaded', $1)
            """, [ids[1]])
        for (load, n) in [(ids[0], 2), (ids[1], 1), (ids[2], 1)] {
            for i in 0..<n {
                try c.store.pg.query(
                    "INSERT INTO \(loads).reject (load_id, source, line_number, raw, reason) "
                        + "VALUES ($1, 's', $2, 'r', 'bad')",
                    [load, i + 1])
            }
        }
        let oldID = "\(Int64((Date().timeIntervalSince1970 - 100 * 86_400) * 1000))-0"
        _ = try c.queue.redis.command("XADD", c.queue.keys.dead, oldID, "queue", "default", "reason", "old")
        _ = try c.queue.redis.command("XADD", c.queue.keys.dead, "*", "queue", "default", "reason", "new")
        func counts() throws -> [Int64] {
            try [
                fx.count("SELECT count(*) FROM \(s).dag_run"), fx.count("SELECT count(*) FROM \(s).task_attempt"),
                fx.count("SELECT count(*) FROM \(s).alert"), fx.count("SELECT count(*) FROM \(loads).load"),
                fx.count("SELECT count(*) FROM \(loads).reject"), Int64(c.queue.deadLetterCount()),
            ]
        }
        let before = try counts()
        let expected: [String: Int] = [
            "runs": 2, "task_instances": 12, "attempts": 12, "alerts": 1, "rejects": 3, "loads": 1, "dead_letters": 1,
        ]
        let dry = try ctl(["db", "clean", "--older-than", "90d", "--dry-run", "--json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(
            (try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Int]) == expected,
            "\(dry.stdout)")
        #expect(try counts() == before, "a dry run deleted something")
        let real = try ctl(["db", "clean", "--older-than", "90d", "--json"])
        #expect(
            (try JSONSerialization.jsonObject(with: Data(real.stdout.utf8)) as? [String: Int]) == expected,
            "\(real.stdout)")
        let runs = Set(
            try c.store.pg.query("SELECT run_id FROM \(s).dag_run").rows.map { try $0.decode(Int64.self, 0) })
        #expect(!runs.contains(diamond[0]) && !runs.contains(diamond[1]))
        #expect(runs.contains(diamond[2]) && runs.contains(failed), "each DAG's newest run stays")
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s).task_instance WHERE run_id = ANY($1::bigint[])",
                [PostgresArray([diamond[0], diamond[1]].map(String.init))]) == 0)
        let kept = Set(try c.store.pg.query("SELECT id FROM \(loads).load").rows.map { try $0.decode(Int64.self, 0) })
        #expect(kept == [ids[1], ids[2]], "the ledger's load and the new one stay")
        #expect(try fx.count("SELECT count(*) FROM \(loads).reject") == 1)
        #expect(try c.queue.deadLetterCount() == 1)
        let again = try ctl(["db", "clean", "--older-than", "90d"])
        #expect(again.stdout.hasPrefix("deleted 0 run(s) with 0 task instance(s)"), "\(again.stdout)")
        #expect(try ctl(["db", "clean", "--older-than", "ninety"]).status != 0)

        // The scheduler's daily round (here every 2 s) while it leads.
        let fourth = try c.trigger("example_diamond", date: Date(timeIntervalSince1970: 1_717_200_000 + 4 * 86_400))
        #expect(try c.wait(run: fourth) == .success)
        try c.store.pg.query(
            "UPDATE \(s).dag_run SET ended_at = now() - interval '100 days' WHERE run_id = $1", [diamond[2]])
        kill(c.schedulers[0].processIdentifier, SIGTERM)
        _ = TestServices.waitForExit(c.schedulers[0])
        try c.startScheduler(extraEnv: ["ETL_RETENTION_DAYS": "90", "ETL_RETENTION_EVERY": "2"])
        try c.waitFor("the scheduler's retention deleting the old run", timeout: 30) {
            try fx.count("SELECT count(*) FROM \(s).dag_run WHERE run_id = $1", [diamond[2]]) == 0
        }
        try c.waitFor("the scheduler's retention saying so", timeout: 10) {
            c.logs(whole: true).contains("retention: deleted 1 run(s)")
        }
    }
}
