import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// What a running task sees: its message, a Postgres connection (inside the attempt's
/// transaction), its deadline, and a log that its worker writes to the attempt's row while it runs.
public final class TaskContext {
    public let message: TaskMessage
    /// The metadata schema (tables of the example DAGs live there too).
    public let schema: String
    /// Monotonic time after which the attempt has timed out, if it has a timeout.
    public let deadline: Double?
    /// The log's lines; those before `flushed` are in Postgres already (the worker's log flusher
    /// wrote them while the task ran). `lineLock` guards both; `flushLock` is held while a flush
    /// is written, so the attempt's end (which writes the rest) waits for it and the lines stay in
    /// order; once `closed`, nothing more is flushed.
    private var lines: [String] = []
    private var flushed = 0
    private var closed = false
    private let lineLock = NSLock()
    private let flushLock = NSLock()
    private let connection: PostgresConnection
    private let firstUse: ((PostgresConnection) throws -> Void)?
    /// Whether the task asked for `pg` (only then can it have written anything through it).
    public private(set) var usedDatabase = false

    /// `firstUse` runs once, the first time the task asks for `pg`: a worker running several
    /// tasks in one transaction opens each one's savepoint there, so tasks that never touch the
    /// database cost no round trip for it.
    /// `connect` opens a connection of the task's own (`ownConnection`); `leaseLost` says when the
    /// attempt's lease is no longer this runner's.
    public init(
        message: TaskMessage, pg: PostgresConnection, schema: String, deadline: Double?,
        firstUse: ((PostgresConnection) throws -> Void)? = nil,
        connect: (() throws -> PostgresConnection)? = nil, leaseLost: @escaping () -> Bool = { false },
        cancelled: @escaping () -> String? = { nil }, echo: ((String) -> Void)? = nil,
        params: [String: String]? = nil
    ) {
        self.runParams = params
        self.message = message
        self.connection = pg
        self.schema = schema
        self.deadline = deadline
        self.firstUse = firstUse
        self.connect = connect
        self.leaseLost = leaseLost
        self.cancelled = cancelled
        self.echo = echo
    }

    /// The run's parameters: given (`etlctl tasks test --param`), or read from the run's row the
    /// first time a task asks (`param`).
    private var runParams: [String: String]?

    /// The value of run parameter `name` (`DAGParam`) as the run was created with it, nil when the
    /// run has none of that name (a run made before its DAG declared it: the task's default holds).
    public func param(_ name: String) throws -> String? {
        if runParams == nil {
            // A read on the attempt's session that writes nothing: it opens no savepoint.
            runParams = try MetadataStore(pg: connection, schema: schema).runParams(message.runID)
        }
        return runParams?[name]
    }

    /// Also gets every line as it is logged (`etlctl tasks test` prints them).
    private let echo: ((String) -> Void)?

    private let connect: (() throws -> PostgresConnection)?
    private let leaseLost: () -> Bool
    /// Who asked to stop the attempt (`etlctl tasks cancel`, the run page), once someone did.
    private let cancelled: () -> String?

    /// A Postgres connection of the task's own, committing on its own (load metadata, a ledger,
    /// chunked loads), beside the attempt's transaction (`pg`). Its backend is registered under the
    /// attempt's lease at every connect and reconnect: a runner that took the attempt over ends it
    /// (its locks and open transaction go), and once the lease is gone it cannot connect again, so a
    /// superseded runner writes nothing more through it. The caller closes it.
    public func ownConnection() throws -> PostgresConnection {
        guard let connect else {
            throw PostgresError(
                code: .misuse, message: "this task context has no connection factory", endpoint: connection.endpoint)
        }
        return try connect()
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

    /// Work that may only happen once the attempt's transaction committed (a report's CSV, written
    /// from the committed rows): the worker runs it after the commit, for a current attempt only,
    /// before its completion event goes out; a superseded runner never runs it. It gets the
    /// attempt's connection, outside any transaction.
    public func afterCommit(_ body: @escaping (PostgresConnection) throws -> Void) { committed.append(body) }

    /// What `afterCommit` was given, in order.
    public private(set) var committed: [(PostgresConnection) throws -> Void] = []

    /// Appends a line to the attempt's log. The worker writes it to Postgres within about a second
    /// while the task runs (`etlctl logs --follow`, the attempt page), and what is left at the end.
    public func log(_ line: String) {
        let stamped = "\(PostgresTimestamp.format(Date())) \(line)"
        lineLock.withLock { lines.append(stamped) }
        echo?(stamped)
    }

    /// The whole log, flushed or not (for a task's own use and tests).
    public var logText: String { lineLock.withLock { Self.text(lines[...]) } }

    static func text(_ lines: ArraySlice<String>) -> String {
        lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
    }

    /// For the log flusher: writes the lines not flushed yet with `write` (false: they were not
    /// written, and go with a later flush or the end). Does nothing once the log is closed.
    func flush(_ write: (String) -> Bool) {
        flushLock.withLock {
            let (chunk, upTo) = lineLock.withLock { () -> (String, Int) in
                closed ? ("", flushed) : (Self.text(lines[flushed...]), lines.count)
            }
            guard !chunk.isEmpty, write(chunk) else { return }
            lineLock.withLock { flushed = upTo }
        }
    }

    /// The attempt ends: waits for a flush under way, closes the log and returns the lines that
    /// were not flushed (the end's record appends them).
    func closeLog() -> String {
        flushLock.withLock {
            lineLock.withLock {
                closed = true
                return Self.text(lines[flushed...])
            }
        }
    }

    /// Throws once the attempt is past its timeout, an operator cancelled it, or its lease is gone
    /// (another runner has it now, or it was ended); long tasks call it between chunks of work.
    public func checkDeadline() throws {
        if let deadline, monotonicSeconds() > deadline { throw TaskTimeout() }
        if let by = cancelled() { throw Cancelled(by: by) }
        if leaseLost() { throw LeaseGone() }
    }

    /// Thrown by `checkDeadline` once an operator asked the attempt to stop.
    public struct Cancelled: Error, CustomStringConvertible {
        public let by: String
        public var description: String { "cancelled by \(by)" }
    }

    /// Thrown by `checkDeadline` once the attempt's lease is no longer this runner's.
    public struct LeaseGone: Error, CustomStringConvertible {
        public var description: String {
            "the attempt's lease is gone (taken over after it expired, or the attempt was ended); stopping"
        }
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
