import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

/// The metadata store against the real Postgres: migrations and the scheduler lease's fencing.
@Suite("Metadata store", .serialized, .timeLimit(.minutes(10)))
struct MetadataStoreTests {
    @Test(
        """
        a scheduler that lost its lease is fenced out: its writes are refused, the new leader's and unfenced sessions' \
        go through
        """
    )
    func fencing() throws {
        let c = try Cluster()
        let env = Environment(c.env)
        let a = MetadataStore(pg: try PostgresConnection(config: PostgresConfig(environment: env)), schema: c.schema)
        let b = MetadataStore(pg: try PostgresConnection(config: PostgresConfig(environment: env)), schema: c.schema)
        let t1 = try #require(try a.acquireLease(holder: "a", ttl: 30).token)
        try a.setFence(t1)
        let dag = try #require(c.registry.dag("example_diamond"))
        let run = try #require(
            try a.createRun(dag, logicalDate: Date(timeIntervalSince1970: 1_717_200_000), type: .manual))
        // a's lease runs out (as if its process had been paused) and b takes over.
        try c.store.pg.query("UPDATE \(c.schema).scheduler_lease SET expires_at = now() - interval '1 second'")
        let t2 = try #require(try b.acquireLease(holder: "b", ttl: 30).token)
        #expect(t2 > t1)
        try b.setFence(t2)
        let refused = #expect(throws: PostgresError.self) { try a.markQueued(run: run, tasks: ["extract"]) }
        #expect(refused?.sqlState == MetadataStore.fencedOut)
        #expect(refused?.description.contains("fenced out") == true, "\(String(describing: refused))")
        #expect(throws: PostgresError.self) { try a.setRunState(run, .failed) }
        #expect(try c.store.instances(run: run)["extract"]?.state == .scheduled)
        #expect(try c.store.run(run)?.state == .queued)
        #expect(try b.markQueued(run: run, tasks: ["extract"]).count == 1)
        // A session without a fence (a worker, etlctl, the web server) is not affected.
        #expect(try c.store.startAttempt(run: run, task: "extract", tryNumber: 1, worker: "w"))
    }

    @Test(
        """
        a run whose tasks all ended is a success only when none failed, was upstream-failed or was cancelled; \
        a failure of an attempt asked to stop is recorded as its cancel, not a retry
        """)
    func endsOfARun() throws {
        let c = try Cluster()
        let dag = try #require(c.registry.dag("example_diamond"))
        let run = try #require(
            try c.store.createRun(dag, logicalDate: Date(timeIntervalSince1970: 1_717_200_000), type: .manual))
        let s = c.schema
        try c.store.pg.query("UPDATE \(s).task_instance SET state = 'success' WHERE run_id = $1", [run])
        #expect(try c.store.allFinished(run: run) == true)
        for bad in ["failed", "upstream_failed", "cancelled"] {
            try c.store.pg.query(
                "UPDATE \(s).task_instance SET state = $2 WHERE run_id = $1 AND task_id = 'publish'", [run, bad])
            #expect(try c.store.allFinished(run: run) == false, "\(bad)")
        }
        // An attempt asked to stop that ends in a failure with retries left: cancelled, no retry.
        try c.store.pg.query(
            "UPDATE \(s).task_instance SET state = 'scheduled' WHERE run_id = $1 AND task_id = 'publish'", [run])
        let tries = try c.store.markQueued(run: run, tasks: ["publish"])
        let n = try #require(tries.first?.tryNumber)
        #expect(try c.store.startAttempt(run: run, task: "publish", tryNumber: n, worker: "w"))
        #expect(try c.store.requestCancel(run: run, task: "publish", by: "test") == .stopping(tryNumber: n))
        #expect(
            try c.store.finishAttempt(
                run: run, task: "publish", tryNumber: n, state: .upForRetry, error: "canceling statement",
                retryAt: Date(), log: ""))
        let row = try #require(try c.store.taskRows(run: run).first { $0.task == "publish" })
        #expect(row.state == "cancelled" && row.error == "cancelled by test (canceling statement)", "\(row)")
    }

    @Test("migrations run safely twice")
    func migrationsTwice() throws {
        let (pg, schema) = try TestServices.isolatedPostgres()
        defer { TestServices.dropSchema(pg, schema) }
        #expect(try Migrator.run(pg, schema: schema + "_m") == Migrations.all.map(\.version))
        #expect(try Migrator.run(pg, schema: schema + "_m") == [])
        try pg.execute(script: "DROP SCHEMA \(schema)_m CASCADE")
    }
}
