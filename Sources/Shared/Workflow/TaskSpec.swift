import ETLSupport
import Foundation

/// One task of a DAG: what runs (`operation`, looked up in the worker's registry), after what,
/// and how it is retried.
public struct TaskSpec: Sendable {
    public let id: String
    public var upstream: [String]
    public var operation: String
    public var arguments: [String: String]
    /// Attempts after the first one.
    public var retries: Int
    public var retryBackoff: Backoff
    /// Seconds an attempt may run before it is failed; 0 for no limit.
    public var timeout: Double
    public var queue: String
    /// The pool whose slots cap how many tasks of its kind are queued or running at once across
    /// all workers (nil: none). Pools and their slots are the registry's (`ETL_POOLS`).
    public var pool: String?

    public init(
        _ id: String, operation: String, upstream: [String] = [], arguments: [String: String] = [:],
        retries: Int = 0, retryBackoff: Backoff = Backoff(base: 5, cap: 300, jitter: 0.5),
        timeout: Double = 0, queue: String = "default", pool: String? = nil
    ) {
        self.pool = pool
        self.id = id
        self.operation = operation
        self.upstream = upstream
        self.arguments = arguments
        self.retries = retries
        self.retryBackoff = retryBackoff
        self.timeout = timeout
        self.queue = queue
    }
}
