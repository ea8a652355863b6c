import ETLSupport
import Foundation
import RedisClient
import Workflow

/// What the scheduler asks a worker to do: one attempt of one task instance.
///
/// On the wire it is versioned JSON, signed with HMAC-SHA256 (see `MessageCodec`). The attempt
/// (`tryNumber`) is part of the identity, so a redelivered message for a finished attempt and a
/// late message for an old attempt can both be recognised and dropped.
public struct TaskMessage: Codable, Sendable, Equatable {
    /// The wire format version this build writes and reads.
    public static let currentVersion = 1

    public var version: Int
    /// Unique per message (per attempt enqueued).
    public var id: String
    public var dag: String
    public var runID: Int64
    public var task: String
    /// Logical date of the run, `YYYY-MM-DD` or a full ISO timestamp.
    public var logicalDate: String
    public var tryNumber: Int
    public var queue: String
    /// Seconds the attempt may run before it is failed (0 = no limit).
    public var timeoutSeconds: Double
    /// When the scheduler enqueued it (seconds since 1970), to measure queue latency.
    public var enqueuedAt: Double
    /// Task-specific arguments (a byte range of a file to load, a generator size, ...).
    public var arguments: [String: String]

    public init(
        id: String = UUID().uuidString.lowercased(), dag: String, runID: Int64, task: String, logicalDate: String,
        tryNumber: Int, queue: String = "default", timeoutSeconds: Double = 0,
        enqueuedAt: Double = Date().timeIntervalSince1970, arguments: [String: String] = [:]
    ) {
        version = Self.currentVersion
        self.id = id
        self.dag = dag
        self.runID = runID
        self.task = task
        self.logicalDate = logicalDate
        self.tryNumber = tryNumber
        self.queue = queue
        self.timeoutSeconds = timeoutSeconds
        self.enqueuedAt = enqueuedAt
        self.arguments = arguments
    }

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case id, dag
        case runID = "run"
        case task
        case logicalDate = "date"
        case tryNumber = "try"
        case queue
        case timeoutSeconds = "timeout"
        case enqueuedAt = "enqueued_at"
        case arguments = "args"
    }
}

extension TaskMessage {
    /// The wire form (sorted keys), written without Foundation's encoder (see `FlatJSON`).
    public var json: [UInt8] {
        var w = FlatJSON.Writer()
        w.field("args", arguments)
        w.field("dag", dag)
        w.field("date", logicalDate)
        w.field("enqueued_at", enqueuedAt)
        w.field("id", id)
        w.field("queue", queue)
        w.field("run", runID)
        w.field("task", task)
        w.field("timeout", timeoutSeconds)
        w.field("try", tryNumber)
        w.field("v", version)
        return w.finished()
    }

    /// Reads the wire form of the current version; nil for anything else (the caller then uses
    /// `JSONDecoder`, which says what is wrong).
    public init?(flat bytes: [UInt8]) {
        guard let o = FlatJSON.parse(bytes), o["v"]?.int == Self.currentVersion, let id = o["id"]?.string,
            let dag = o["dag"]?.string,
            let run = o["run"]?.int, let task = o["task"]?.string, let date = o["date"]?.string,
            let tryNumber = o["try"]?.int,
            let queue = o["queue"]?.string, let timeout = o["timeout"]?.double,
            let enqueuedAt = o["enqueued_at"]?.double,
            case .object(let args)? = o["args"]
        else { return nil }
        self.init(
            id: id, dag: dag, runID: Int64(run), task: task, logicalDate: date, tryNumber: tryNumber, queue: queue,
            timeoutSeconds: timeout, enqueuedAt: enqueuedAt, arguments: args)
    }
}
