import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import RedisClient
import Workflow

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
    public init(
        message: TaskMessage, pg: PostgresConnection, schema: String, deadline: Double?,
        firstUse: ((PostgresConnection) throws -> Void)? = nil
    ) {
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
