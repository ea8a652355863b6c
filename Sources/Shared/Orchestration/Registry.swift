import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// An operation a task runs, by name.
public typealias TaskOperation = @Sendable (TaskContext) throws -> Void

/// The DAGs and operations of this build. The scheduler and every worker load the same one.
public struct Registry: Sendable {
    public let dags: [DAG]
    public let operations: [String: TaskOperation]
    /// Idempotent DDL the DAGs' tasks need, with `@S` for the metadata schema; applied by
    /// `Migrator.run(pg, schema:, setup:)` when a process starts.
    public let setup: [SetupScript]
    private let byID: [String: DAG]

    /// Refuses, at start-up, what would otherwise fail at run time: two DAGs with one id, and a task
    /// naming an operation this build does not have (its message would end as a dead letter).
    public init(dags: [DAG], operations: [String: TaskOperation], setup: [SetupScript] = []) throws {
        var byID: [String: DAG] = [:]
        for d in dags {
            guard byID[d.id] == nil else {
                throw DAGError(dag: d.id, problem: "two DAGs have this id. Fix: give each DAG an id of its own")
            }
            byID[d.id] = d
            for t in d.tasks where operations[t.operation] == nil {
                let known = operations.keys.sorted().joined(separator: ", ")
                throw DAGError(
                    dag: d.id,
                    problem: "task '\(t.id)' runs operation '\(t.operation)', which this build does not have. "
                        + "Fix: name one of its operations (\(known))"
                        + " or add '\(t.operation)' to the pipeline's operations"
                )
            }
        }
        self.dags = dags
        self.operations = operations
        self.setup = setup
        self.byID = byID
    }

    public func dag(_ id: String) -> DAG? { byID[id] }

    /// Every queue some task uses.
    public var queues: [String] { Array(Set(dags.flatMap { $0.tasks.map(\.queue) })).sorted() }
}
