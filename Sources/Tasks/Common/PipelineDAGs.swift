import ETLSupport
import Orchestration
import Workflow

/// The pipelines this build runs: the six DAGs of the original, with the same names and
/// dependencies: three ingestions (b2b, ip2geo, weblog) and three reports that wait for them (same
/// logical date). Each is declared in its own folder (`B2B/B2BPipeline.swift`, ...,
/// `Reports/Reports.swift`); this list is the one place that names them, and every other list of
/// pipelines is derived from it.
public enum PipelineDAGs {
    public static let pipelines: [Pipeline] =
        [B2BPipeline.pipeline, IP2GeoPipeline.pipeline, WeblogPipeline.pipeline] + Reports.all.map(Pipeline.report)

    /// The ingestion pipelines' names, in the order their runs are shown (etlctl summary, the loads page).
    public static var ingestions: [String] { pipelines.filter { $0.kind == .ingestion }.map(\.name) }
    /// Every pipeline's name (= its DAG's id), in declaration order.
    public static var names: [String] { pipelines.map(\.name) }

    /// The DAGs of `pipelines`, checked to be named as their pipelines.
    public static func dags(settings s: PipelineSettings, pipelines: [Pipeline] = pipelines) throws -> [DAG] {
        try pipelines.map { p in
            let dag = try p.dag(s)
            guard dag.id == p.name else {
                throw DAGError(
                    dag: dag.id, problem: "pipeline '\(p.name)' declares a DAG named '\(dag.id)'. Fix: name them alike")
            }
            return dag
        }
    }

    /// The operations of `pipelines`, by name. Only `PipelineSchemas.createTables` may be declared
    /// by several pipelines (the ingestions share it); any other name declared twice is refused, since
    /// one pipeline's task would silently run the other's code.
    public static func operations(
        settings s: PipelineSettings, environment env: Environment, pipelines: [Pipeline] = pipelines
    ) throws -> [String: TaskOperation] {
        var ops: [String: TaskOperation] = [:]
        var owner: [String: String] = [:]
        for p in pipelines {
            for (name, op) in p.operations(s, env) {
                if let first = owner[name] {
                    guard name == PipelineSchemas.createTables else {
                        throw DAGError(
                            dag: p.name,
                            problem: "operation '\(name)' is declared by pipelines '\(first)' and '\(p.name)'. "
                                + "Fix: give each pipeline's operations names of their own, e.g. '\(p.name).<step>'")
                    }
                    continue
                }
                owner[name] = p.name
                ops[name] = op
            }
        }
        return ops
    }
}
