import ETLSupport
import Foundation

/// The states of a task instance, as in Airflow.
public enum TaskState: String, Sendable, Codable, CaseIterable {
    case scheduled, queued, running, success, failed
    case upForRetry = "up_for_retry"
    case upstreamFailed = "upstream_failed"

    /// No further attempt will happen without an operator.
    public var isFinished: Bool { self == .success || self == .failed || self == .upstreamFailed }
}
