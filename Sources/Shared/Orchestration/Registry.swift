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
    public let setup: [String]
    private let byID: [String: DAG]

    public init(dags: [DAG], operations: [String: TaskOperation], setup: [String] = []) {
        self.dags = dags
        self.operations = operations
        self.setup = setup
        byID = Dictionary(uniqueKeysWithValues: dags.map { ($0.id, $0) })
    }

    public func dag(_ id: String) -> DAG? { byID[id] }

    /// Every queue some task uses.
    public var queues: [String] { Array(Set(dags.flatMap { $0.tasks.map(\.queue) })).sorted() }
}
