import ETLSupport
import Foundation
import Logging
import Metadata
import Orchestration
import PostgresClient
import Tasks
import TestSupport
import Testing
import Workflow

/// The pipeline of README "Adding a pipeline", written from that section alone: a table in a DDL
/// file, one `Pipeline` declaration, and the registry built with it. It runs through a real
/// scheduler and worker (in this process, on the test's servers).
enum Greetings {
    // Step 1: the table, appended to sources/ddl/datalake.sql (here: to a copy of it).
    static let ddl = """
        CREATE TABLE IF NOT EXISTS greetings (
            logical_date date PRIMARY KEY,
            greeting text NOT NULL
        );
        """

    // Step 2: the declaration: its DAG and the operations its tasks name.
    static let pipeline = Pipeline(name: "greetings", kind: .ingestion) { s in
        try DAG(
            "greetings", schedule: try s.schedule(), startDate: Pipeline.startDate, tags: ["ingestion"],
            tasks: [
                Pipeline.task("greet", "greetings.greet"),
                Pipeline.task("check", "greetings.check", ["greet"]),
            ])
    } operations: { s, _ in
        [
            "greetings.greet": { ctx in
                let day = try Pipeline.logicalDay(ctx)
                try ctx.pg.query(
                    """
                    INSERT INTO \(s.datalake).greetings VALUES ($1::date, $2)
                    ON CONFLICT (logical_date) DO UPDATE SET greeting = EXCLUDED.greeting
                    """, [day.description, "hello, \(day)"])
                ctx.log("greeted \(day)")
            },
            "greetings.check": { ctx in
                let day = try Pipeline.logicalDay(ctx)
                let n = try ctx.pg.query(
                    "SELECT count(*) FROM \(s.datalake).greetings WHERE logical_date = $1::date", [day.description]
                ).rows[0].decode(Int.self, 0)
                guard n == 1 else { throw PipelineError("no greeting for \(day)") }
            },
        ]
    }
}

@Suite("Adding a pipeline (README)", .timeLimit(.minutes(10)))
struct AddPipelineTests {
    /// A copy of sources/ with the greetings table appended to ddl/datalake.sql.
    static func sources() throws -> URL {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("etl-sources-\(TestServices.randomSuffix())")
        let real = TestServices.repoRoot.appendingPathComponent("sources")
        try fm.createDirectory(at: dir.appendingPathComponent("ddl"), withIntermediateDirectories: true)
        for name in ["datalake", "loads", "datamart"] {
            var sql = try String(contentsOf: real.appendingPathComponent("ddl/\(name).sql"), encoding: .utf8)
            if name == "datalake" { sql += "\n" + Greetings.ddl + "\n" }
            try sql.write(to: dir.appendingPathComponent("ddl/\(name).sql"), atomically: true, encoding: .utf8)
        }
        try fm.createSymbolicLink(
            at: dir.appendingPathComponent("data"), withDestinationURL: real.appendingPathComponent("data"))
        return dir
    }

    @Test("a declared pipeline loads beside the six, runs through scheduler and worker, and writes its table")
    func addedPipelineRuns() throws {
        let sources = try Self.sources()
        defer { try? FileManager.default.removeItem(at: sources) }
        // The six pipelines load too, paused (as in production), so only the new one runs.
        let c = try Cluster(extra: [
            "ETL_SOURCES_DIR": sources.path, "ETL_PIPELINE_DAGS": "true", "ETL_DAGS_ARE_PAUSED_AT_CREATION": "true",
        ])
        let env = Environment(c.env)
        // Step 3: the registry with the pipeline added.
        let registry = try Catalog.registry(environment: env, pipelines: PipelineDAGs.pipelines + [Greetings.pipeline])
        #expect(registry.dags.map(\.id).contains("greetings"))
        #expect(registry.dags.count == c.registry.dags.count + 1)

        // The scheduler and a worker, as the programs run them, in this process.
        let logger = Logger(label: "add-pipeline-test")
        let scheduler = try SchedulerService(env: env, registry: registry, logger: logger)
        let worker = try WorkerService(
            env: env, registry: registry, queues: ["default"], concurrency: 2, prefetch: nil, logger: logger)
        let done = DispatchGroup()
        for body in [{ try scheduler.runBlocking() }, { _ = try worker.runBlocking() }] as [@Sendable () throws -> Void]
        {
            done.enter()
            Thread {
                defer { done.leave() }
                try? body()
            }.start()
        }
        defer {
            scheduler.stop.set()
            worker.stop.set()
            _ = done.wait(timeout: .now() + 30)
        }
        // The DAG is recorded once the scheduler has started; then trigger it as an operator would.
        try c.waitFor("the greetings DAG recorded") { try c.store.dagRows().contains { $0.id == "greetings" } }
        let ops = OperatorActions(registry: registry, store: { c.store }, queue: { c.queue }, actor: "test")
        let date = Date(timeIntervalSince1970: 1_717_200_000)  // 2024-06-01
        try ops.setPaused("greetings", false)
        let run = try ops.trigger("greetings", logicalDate: date)
        try c.waitFor("the greetings run finished", timeout: 60) { try c.store.run(run)?.state.isFinished ?? false }
        #expect(try c.store.run(run)?.state == .success)
        // Unpaused, the DAG also got its scheduled run for the latest day: one row per logical date.
        let rows = try c.store.pg.query(
            "SELECT logical_date::text, greeting FROM \(c.env["ETL_DATALAKE_SCHEMA"]!).greetings "
                + "WHERE logical_date = $1",
            ["2024-06-01"]
        ).rows
        #expect(rows.count == 1)
        #expect(try rows.first?.decode(String.self, 1) == "hello, 2024-06-01")
        #expect(try c.store.taskRows(run: run).map(\.state).sorted() == ["success", "success"])
    }

    @Test("start-up refuses a task whose operation does not exist, naming the DAG, the task and the operation")
    func typoRefused() throws {
        let fx = try PipelineFixture(database: false)
        let typo = Pipeline(name: "greetings", kind: .ingestion) { s in
            try DAG(
                "greetings", schedule: try s.schedule(), startDate: Pipeline.startDate,
                tasks: [Pipeline.task("greet", "greetings.gret")])
        } operations: { s, env in
            Greetings.pipeline.operations(s, env)
        }
        do {
            _ = try Catalog.registry(environment: Environment(fx.values), pipelines: [typo])
            Issue.record("a registry with an unknown operation was accepted")
        } catch let e as DAGError {
            let text = "\(e)"
            #expect(
                text.contains("greetings") && text.contains("'greet'") && text.contains("'greetings.gret'"), "\(text)")
            #expect(text.contains("greetings.greet"), "the known operations are listed: \(text)")
        }
        // Two pipelines declaring one operation name: one would run the other's code; refused.
        let copycat = Pipeline(name: "copycat", kind: .ingestion) { s in
            try DAG(
                "copycat", schedule: try s.schedule(), startDate: Pipeline.startDate,
                tasks: [Pipeline.task("greet", "greetings.greet")])
        } operations: { s, env in
            Greetings.pipeline.operations(s, env)
        }
        do {
            _ = try Catalog.registry(environment: Environment(fx.values), pipelines: [Greetings.pipeline, copycat])
            Issue.record("two pipelines declaring one operation were accepted")
        } catch let e as DAGError {
            #expect("\(e)".contains("'greetings' and 'copycat'"), "\(e)")
        }
        // The ingestions' shared create_tables is the one name several pipelines may declare.
        #expect(throws: Never.self) { try Catalog.registry(environment: Environment(fx.values)) }
        // A declaration whose DAG is named differently from the pipeline is refused too.
        let misnamed = Pipeline(name: "greeting", kind: .ingestion) { s in
            try Greetings.pipeline.dag(s)
        } operations: {
            s, env in
            Greetings.pipeline.operations(s, env)
        }
        #expect(throws: DAGError.self) {
            try Catalog.registry(environment: Environment(fx.values), pipelines: [misnamed])
        }
    }
}
