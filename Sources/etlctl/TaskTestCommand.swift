import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import Tasks
import Workflow

/// `etlctl tasks test DAG TASK --date D`: one task in this process, as Airflow's `tasks test`.
struct TaskTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run one task for a date in this process, without the scheduler and without recording a run.",
        discussion: """
            For writing and debugging a step: the task runs here against the real Postgres, printing its log
            as it goes; its writes commit when it succeeds. By default everything it writes goes to scratch
            places of its own, so the datalake, the ledgers, the reports and the metadata are untouched:
            the schemas <name>_scratch (metadata, datalake, loads, datamart) and, under --scratch-dir
            (default ./scratch), the generated exports, the web logs folder and the reports. Scratch
            schemas and files stay between runs, so steps can be run one after another (create_tables,
            then generate_orders, then load_tables); --fresh drops them first. --real writes the real ones
            instead, as a worker would (still without a run). Exit 0 when the task succeeded.
            Examples:
              etlctl tasks test b2b create_tables --date 2025-06-01
              etlctl tasks test popular-devices report --date 2025-06-01 --real
              etlctl tasks test popular-devices report --date 2025-06-01 --param top=20
            --param sets a run parameter as a manual run would have it (etlctl dags params DAG).
            """)
    @Argument(help: "The DAG id.") var dag: String
    @Argument(help: "The task id.") var task: String
    @Option(help: "The logical date, YYYY-MM-DD (default: the DAG's latest complete interval).") var date: String?
    @Flag(help: "Write the real schemas and folders instead of scratch ones.") var real = false
    @Flag(help: "Drop the scratch schemas and folder first.") var fresh = false
    @Option(help: "The scratch folder (default: ETL_SCRATCH_DIR, else ./scratch).") var scratchDir: String?
    @Option(name: .customLong("param"), help: "NAME=VALUE, one of the DAG's parameters (repeatable).")
    var params: [String] = []

    func validate() throws {
        if real && fresh { throw ValidationError("--fresh drops scratch places: it does not go with --real") }
    }

    /// The variables a scratch run changes: schemas get `_scratch`, output folders go under `dir`.
    static func scratch(_ env: Environment, dir: String) throws -> [String: String] {
        let s = try PipelineSettings(environment: env)
        var v = env.values
        v["ETL_SCHEMA"] = (env["ETL_SCHEMA"] ?? "etl") + "_scratch"
        v["ETL_DATALAKE_SCHEMA"] = s.datalake + "_scratch"
        v["ETL_LOADS_SCHEMA"] = s.loads + "_scratch"
        v["ETL_DATAMART_SCHEMA"] = s.datamart + "_scratch"
        v["ETL_GENERATED_DIR"] = "\(dir)/generated"
        v["ETL_B2B_EXPORT_DIR"] = "\(dir)/generated/exports"
        v["ETL_WEBLOG_DIR"] = "\(dir)/apache-logs"
        v["ETL_REPORTS_DIR"] = "\(dir)/reports"
        return v
    }

    func run() throws {
        let base = try Context()
        let d = try base.dag(dag)
        _ = try base.task(d, task)
        let logical = try date.map(parseDate) ?? base.operations().latestInterval(dag)
        let dir = scratchDir ?? base.env["ETL_SCRATCH_DIR"] ?? "scratch"
        let env = real ? base.env : Environment(try failing { try Self.scratch(base.env, dir: dir) })
        let registry = try failing { try Catalog.registry(environment: env) }
        let settings = try failing { try PipelineSettings(environment: env) }
        let schema = env["ETL_SCHEMA"] ?? "etl"
        let spec = try base.task(try base.dag(dag), task)
        // The parameters as a manual run of this DAG would have them (its folders those of `env`).
        let values = try failing { () -> [String: String] in
            do { return try registry.requireDAG(dag).resolveParams(DAG.parseParams(params), type: .manual) } catch let e
                as DAGParamError
            { throw OperatorError(.invalid, "DAG '\(dag)': \(e)") }
        }
        guard let op = registry.operations[spec.operation] else {
            throw fail("task '\(task)' runs operation '\(spec.operation)', which this build does not have")
        }
        var config = try failing { try PostgresConfig(environment: env) }
        config.reconnectTimeout = 0
        let pg = try failing { try PostgresConnection(config: config) }
        defer { pg.close() }
        if fresh {
            for name in [schema, settings.datalake, settings.loads, settings.datamart] {
                guard name.hasSuffix("_scratch") else { continue }
                try failing { try pg.query("DROP SCHEMA IF EXISTS \(name) CASCADE") }
            }
            try? FileManager.default.removeItem(atPath: dir)
            print("dropped the scratch schemas and \(dir)")
        }
        _ = try failing { try Migrator.run(pg, schema: schema, setup: registry.setup) }
        let destination =
            real
            ? "the real schemas and folders"
            : "scratch: schemas \(schema), \(settings.datalake), \(settings.loads), \(settings.datamart); folder \(dir)"
        let day = PostgresTimestamp.format(logical).prefix(10)
        print("=== \(dag).\(task) for \(day) in this process, into \(destination)")
        if !values.isEmpty {
            print("=== parameters: \(values.keys.sorted().map { "\($0)=\(values[$0]!)" }.joined(separator: " "))")
        }
        let message = TaskMessage(
            dag: dag, runID: 0, task: task, logicalDate: PostgresTimestamp.format(logical), tryNumber: 1,
            queue: spec.queue, timeoutSeconds: spec.timeout, arguments: spec.arguments)
        let start = monotonicSeconds()
        // Writing the real schemas is an operator action like any other: it is recorded.
        if real {
            try failing {
                try base.operations().audited(
                    "tasks-test", "\(dag) task \(task)",
                    detail: "--real, date \(PostgresTimestamp.format(logical).prefix(10))"
                        + values.keys.sorted().map { " \($0)=\(values[$0]!)" }.joined()
                ) {}
            }
        }
        do {
            // As a worker does: the task's writes through `pg` commit together when it succeeds.
            let hooks = try pg.transaction { tx -> [(PostgresConnection) throws -> Void] in
                let ctx = TaskContext(
                    message: message, pg: tx, schema: schema,
                    deadline: spec.timeout > 0 ? monotonicSeconds() + spec.timeout : nil,
                    connect: { try PostgresConnection(config: config) },
                    echo: { line in
                        print(line)
                        fflush(nil)
                    }, params: values)
                try op(ctx)
                return ctx.committed
            }
            for hook in hooks { try hook(pg) }
        } catch {
            print("=== failed after \(String(format: "%.2f", monotonicSeconds() - start)) s: \(error)")
            throw ExitCode(1)
        }
        print("=== succeeded in \(String(format: "%.2f", monotonicSeconds() - start)) s (no run was recorded)")
    }
}
