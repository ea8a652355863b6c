import ETLSupport
import Workflow

extension Registry {
    /// The DAG `id` of this build, or `OperatorError.notFound` listing the known ones: the one
    /// lookup behind etlctl, the web UI and the operator actions.
    public func requireDAG(_ id: String) throws -> DAG {
        guard let d = dag(id) else {
            let known = dags.map(\.id).joined(separator: ", ")
            throw OperatorError(
                .notFound, "no DAG named '\(shown(id))'. Fix: use one of: \(known.isEmpty ? "(none loaded)" : known)")
        }
        return d
    }

    /// The task `task` of `dag`, or `OperatorError.notFound` listing the DAG's tasks.
    public func requireTask(_ dag: DAG, _ task: String) throws -> TaskSpec {
        guard let t = dag.task(task) else {
            throw OperatorError(
                .notFound,
                "DAG '\(dag.id)' has no task '\(shown(task))'."
                    + " Fix: use one of: \(dag.tasks.map(\.id).joined(separator: ", "))"
            )
        }
        return t
    }
}
