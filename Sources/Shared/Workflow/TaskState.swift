import ETLSupport
import Foundation

/// The states of a task instance, as in Airflow.
public enum TaskState: String, Sendable, Codable, CaseIterable {
    case scheduled, queued, running, success, failed
    case upForRetry = "up_for_retry"
    case upstreamFailed = "upstream_failed"
    /// Stopped by an operator (`etlctl tasks cancel`, the run page's Cancel): ends like a failure
    /// (what depends on it is upstream-failed, its run fails) but is never retried unless cleared.
    case cancelled

    /// No further attempt will happen without an operator.
    public var isFinished: Bool {
        self == .success || self == .failed || self == .upstreamFailed || self == .cancelled
    }

    /// Ended without success: what depends on it cannot run.
    public var isFailure: Bool { self == .failed || self == .upstreamFailed || self == .cancelled }
}
