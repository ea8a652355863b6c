import ETLSupport
import Foundation
import Orchestration
import PostgresClient
import Workflow

/// One pipeline, declared in one place: its DAG, the operations its tasks run, and, for a report
/// pipeline, its report (SQL, columns, title, chart). Everything that names pipelines (the registry
/// every program loads, `etlctl summary`, the loads and reports pages, the report titles) reads
/// `PipelineDAGs.pipelines`, the list of these declarations. README "Adding a pipeline" walks
/// through writing one.
///
/// ```swift
/// static let pipeline = Pipeline(name: "ip2geo", kind: .ingestion) { s in
///     try DAG("ip2geo", schedule: try s.schedule(), startDate: Pipeline.startDate, tags: ["ingestion"],
///             tasks: [Pipeline.task("load_ip2geo", "ip2geo.load")])
/// } operations: { s, env in
///     ["ip2geo.load": { ctx in ... }]
/// }
/// ```
public struct Pipeline: Sendable {
    public enum Kind: String, Sendable {
        /// Loads source data into the datalake, recording each load (`etlctl loads list`).
        case ingestion
        /// Computes a report for its logical date from what the ingestions loaded.
        case report
    }

    /// The DAG's id, and the name operators see.
    public let name: String
    public let kind: Kind
    /// The pipeline's DAG, built from the settings (the schedule, the number of weblog parts).
    public let dag: @Sendable (PipelineSettings) throws -> DAG
    /// The operations its tasks name, by operation name.
    public let operations: @Sendable (PipelineSettings, Environment) -> [String: TaskOperation]
    /// A report pipeline's report (nil for an ingestion).
    public let report: Reports.Report?
    /// The check that its inputs for a date are complete before a run starts (nil: none beyond
    /// its upstream DAGs' runs).
    public let inputs: (@Sendable (PipelineSettings) -> InputCheck)?

    public init(
        name: String, kind: Kind, report: Reports.Report? = nil,
        inputs: (@Sendable (PipelineSettings) -> InputCheck)? = nil,
        dag: @escaping @Sendable (PipelineSettings) throws -> DAG,
        operations: @escaping @Sendable (PipelineSettings, Environment) -> [String: TaskOperation]
    ) {
        self.name = name
        self.kind = kind
        self.report = report
        self.inputs = inputs
        self.dag = dag
        self.operations = operations
    }

    /// The pipelines' max active runs: one run of a DAG at a time, in date order, since a DAG's runs
    /// write the same tables and files.
    public static let maxActiveRuns = 1

    /// The first logical date of the pipelines' schedules (2024-01-01).
    public static let startDate = Date(timeIntervalSince1970: 1_704_067_200)

    /// A pipeline task with the project's defaults: retried twice after 10 s, 20 s (up to 300 s,
    /// 30% jitter), and failed after two hours, far beyond a large run here (10,000,000 log lines
    /// load in about a minute), so only a stuck task reaches it.
    public static func task(
        _ id: String, _ operation: String, _ upstream: [String] = [], args: [String: String] = [:], retries: Int = 2,
        pool: String? = nil
    ) -> TaskSpec {
        TaskSpec(
            id, operation: operation, upstream: upstream, arguments: args, retries: retries,
            retryBackoff: Backoff(base: 10, cap: 300, jitter: 0.3), timeout: 7200, pool: pool)
    }

    /// The pool of the tasks that load a lot into Postgres (`ETL_POOLS`, default 4 slots).
    public static let loadsPool = "loads"
    /// The pool of the report tasks (`ETL_POOLS`, default 2 slots).
    public static let reportsPool = "reports"

    /// The logical date of the task's run, as a day.
    public static func logicalDay(_ ctx: TaskContext) throws -> Day {
        guard let d = Day(ctx.message.logicalDate) else {
            throw PipelineError("logical date \(ctx.message.logicalDate) is not a date")
        }
        return d
    }
}
