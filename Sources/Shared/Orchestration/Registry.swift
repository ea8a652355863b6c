import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// An operation a task runs, by name.
public typealias TaskOperation = @Sendable (TaskContext) throws -> Void

/// Whether a run's input data for its logical date is complete (a DAG's watermark check, like a
/// sensor): nil when it is, else what it waits for. The scheduler asks before the run's first task
/// is enqueued, on its own connection, and asks again on the next pass while it waits.
public typealias InputCheck =
    @Sendable (_ pg: PostgresConnection, _ metadataSchema: String, _ date: Date) throws -> String?

/// The DAGs and operations of this build. The scheduler and every worker load the same one.
public struct Registry: Sendable {
    public let dags: [DAG]
    public let operations: [String: TaskOperation]
    /// Idempotent DDL the DAGs' tasks need, with `@S` for the metadata schema; applied by
    /// `Migrator.run(pg, schema:, setup:)` when a process starts.
    public let setup: [SetupScript]
    /// Named pools and their slots: at most that many tasks of a pool are queued or running at once.
    public let pools: [String: Int]
    /// Per DAG id: the check that its inputs for a date are complete (see `InputCheck`).
    public let inputs: [String: InputCheck]
    private let byID: [String: DAG]

    /// Refuses, at start-up, what would otherwise fail at run time: two DAGs with one id, and a task
    /// naming an operation this build does not have (its message would end as a dead letter).
    public init(
        dags: [DAG], operations: [String: TaskOperation], setup: [SetupScript] = [], pools: [String: Int] = [:],
        inputs: [String: InputCheck] = [:]
    ) throws {
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
        for d in dags {
            for t in d.tasks {
                guard let p = t.pool, pools[p] == nil else { continue }
                let known = pools.isEmpty ? "none is defined" : pools.keys.sorted().joined(separator: ", ")
                throw DAGError(
                    dag: d.id,
                    problem: "task '\(t.id)' is in pool '\(p)', which is not defined (\(known)). "
                        + "Fix: add it to ETL_POOLS (e.g. ETL_POOLS=\(p)=2) or name a defined pool")
            }
        }
        self.dags = dags
        self.pools = pools
        self.inputs = inputs
        self.operations = operations
        self.setup = setup
        self.byID = byID
    }

    public func dag(_ id: String) -> DAG? { byID[id] }

    /// Every queue some task uses.
    public var queues: [String] { Array(Set(dags.flatMap { $0.tasks.map(\.queue) })).sorted() }
}
