import ETLSupport
import Foundation

/// What happens to a task's attempt when it fails or runs too long: the rules the worker (a task's
/// own error) and the scheduler (a timeout) share. Pure: time and randomness come in as arguments.
extension TaskSpec {
    /// How a failed attempt ends.
    public struct FailedAttempt: Sendable, Equatable {
        /// `.upForRetry` while tries remain, else `.failed`.
        public let state: TaskState
        /// When the next try may start (nil when none will).
        public let retryAt: Date?

        public init(state: TaskState, retryAt: Date?) {
            self.state = state
            self.retryAt = retryAt
        }
    }

    /// Attempt `tryNumber` (1 for the first) failed at `now`: it is up for retry after the backoff
    /// for that try while tries remain (`retries` counts the tries after the first), else failed.
    /// `random` is the jitter draw (0...1).
    public func afterFailure(tryNumber: Int, now: Date, random: Double = .random(in: 0...1)) -> FailedAttempt {
        guard tryNumber <= retries else { return FailedAttempt(state: .failed, retryAt: nil) }
        let delay = retryBackoff.delay(attempt: tryNumber - 1, random: random)
        return FailedAttempt(state: .upForRetry, retryAt: now.addingTimeInterval(delay))
    }

    /// Whether an attempt that started at `startedAt` has run past the task's timeout at `now`.
    /// A task without a timeout, or an attempt without a start time yet, never has.
    public func isTimedOut(startedAt: Date?, now: Date) -> Bool {
        guard timeout > 0, let startedAt else { return false }
        return now.timeIntervalSince(startedAt) > timeout
    }
}
