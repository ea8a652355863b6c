/// The rules of a worker slot's batches, without the I/O: `WorkerService.handle` fetches up to
/// `prefetch` messages, starts their attempts, and runs them in rounds; these functions say what
/// each round does next.
///
/// - A round runs its tasks one after another in one transaction, until the batch window
///   (`window`, 50 ms) has passed, or the next task has a timeout: a task with a timeout runs only
///   first in a round, where its start time is the round's (`runsNext`).
/// - After the tasks ran and their ends were recorded, each one is acknowledged with its completion
///   event when its attempt was still current, acknowledged without an event when it was superseded
///   (timed out or cleared meanwhile) without writing, and rolled back when it was superseded after
///   writing: the whole round when others ran with it, which then go one per transaction (`verdict`).
/// - When the round's transaction fails for another reason than a lost connection, its tasks go
///   one per transaction to find whose fault it is, and a lone task's failure fails its attempt
///   (`afterFailure`).
/// - After a task that ran longer than the window, the slot takes one message at a time until tasks
///   are quick again (`prefetch(after:configured:)`).
public struct BatchRound: Sendable, Equatable {
    /// Seconds after which a round commits what it ran, so a long batch never hides its finished
    /// tasks from the scheduler.
    public static let window = 0.05

    public enum Mode: Sendable, Equatable {
        /// The round's tasks share one transaction.
        case together
        /// One task per transaction (after a superseded writer or a failed transaction).
        case alone
    }

    public private(set) var mode: Mode = .together

    public init() {}

    /// How many of `waiting` started tasks the next transaction is offered.
    public func offer(_ waiting: Int) -> Int { mode == .alone ? min(1, waiting) : waiting }

    /// Whether the round's transaction runs its next task: the first always; later ones while the
    /// window is open, unless the next one has a timeout.
    public static func runsNext(ranSoFar: Int, elapsed: Double, nextHasTimeout: Bool) -> Bool {
        ranSoFar == 0 || (elapsed <= window && !nextHasTimeout)
    }

    /// Whether a task that ran `seconds` makes the slot slow down (one message per fetch).
    public static func isSlow(taskSeconds seconds: Double) -> Bool { seconds > window }

    /// How many messages the slot fetches next.
    public static func prefetch(after slow: Bool, configured: Int) -> Int { slow ? 1 : configured }

    /// What becomes of a task that ran in a round, once its end was recorded.
    public enum Verdict: Sendable, Equatable {
        /// Acknowledge its message; with its completion event when `event`.
        case acknowledge(event: Bool)
        /// Roll the whole round back and rerun its tasks one per transaction.
        case rollBackRound
        /// Roll this lone task's transaction back and acknowledge it without an event.
        case rollBackTask
    }

    /// The verdict on one task of a round of `roundSize` tasks: `current` when its attempt was still
    /// the current one as its end was recorded, `wrote` when it used the database, `succeeded` when
    /// it ended in success.
    public static func verdict(current: Bool, wrote: Bool, succeeded: Bool, roundSize: Int) -> Verdict {
        if current { return .acknowledge(event: true) }
        guard wrote && succeeded else { return .acknowledge(event: false) }
        return roundSize > 1 ? .rollBackRound : .rollBackTask
    }

    /// What the slot does when a round's transaction failed.
    public enum Recovery: Sendable, Equatable {
        /// A lost connection: the messages stay pending and run again after a reconnect.
        case reconnect
        /// Rerun the round's tasks one per transaction.
        case goAlone
        /// The lone task's attempt fails (outside any transaction), as its own error would.
        case failTask
    }

    /// The round of `offered` tasks failed: `supersededWrites` when a superseded writer rolled
    /// it back, `connectionLost` when the database connection went away.
    public mutating func afterFailure(offered: Int, supersededWrites: Bool, connectionLost: Bool) -> Recovery {
        if connectionLost { return .reconnect }
        if supersededWrites || offered > 1 {
            mode = .alone
            return .goAlone
        }
        return .failTask
    }
}
