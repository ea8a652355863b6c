import Foundation
import Shared

/// What a running task sees: its message, a Postgres connection (inside the attempt's
/// transaction), its deadline, and a log that is saved with the attempt.
public final class TaskContext {
    public let message: TaskMessage
    /// The metadata schema (tables of the example DAGs live there too).
    public let schema: String
    /// Monotonic time after which the attempt has timed out, if it has a timeout.
    public let deadline: Double?
    private(set) var lines: [String] = []
    private let connection: PostgresConnection
    private let firstUse: ((PostgresConnection) throws -> Void)?
    /// Whether the task asked for `pg` (only then can it have written anything through it).
    public private(set) var usedDatabase = false

    /// `firstUse` runs once, the first time the task asks for `pg`: a worker running several
    /// tasks in one transaction opens each one's savepoint there, so tasks that never touch the
    /// database cost no round trip for it.
    public init(message: TaskMessage, pg: PostgresConnection, schema: String, deadline: Double?,
                firstUse: ((PostgresConnection) throws -> Void)? = nil) {
        self.message = message
        self.connection = pg
        self.schema = schema
        self.deadline = deadline
        self.firstUse = firstUse
    }

    /// The attempt's connection: its writes commit together with the attempt's success.
    public var pg: PostgresConnection {
        get throws {
            if !usedDatabase {
                usedDatabase = true
                try firstUse?(connection)
            }
            return connection
        }
    }

    /// Appends a line to the attempt's log.
    public func log(_ line: String) {
        lines.append("\(PostgresTimestamp.format(Date())) \(line)")
    }

    public var logText: String { lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n" }

    /// Throws once the attempt is past its timeout; long tasks call it between chunks of work.
    public func checkDeadline() throws {
        if let deadline, monotonicSeconds() > deadline { throw TaskTimeout() }
    }

    /// Sleeps in short steps, checking the deadline.
    public func sleep(_ seconds: Double) throws {
        let end = monotonicSeconds() + seconds
        while monotonicSeconds() < end {
            try checkDeadline()
            sleepSeconds(min(0.05, end - monotonicSeconds()))
        }
    }
}

/// Thrown when a task runs past its execution timeout.
public struct TaskTimeout: Error, CustomStringConvertible {
    public var description: String { "timed out: the task ran past its execution timeout" }
}

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
