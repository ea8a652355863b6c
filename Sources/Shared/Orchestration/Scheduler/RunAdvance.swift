import Foundation
import Workflow

/// What the scheduler does with one run, given its tasks' states: the decisions of
/// `SchedulerService.advance` without the I/O. The service reads the run's task instances, asks
/// these functions, and carries the answers out against Postgres and Redis.
///
/// A full pass goes:
/// 1. `timeouts`: running attempts past their task's timeout, each with how it ends (up for retry
///    after its backoff, or failed). The service fails them, fenced by try number, and reads the
///    run again when one was.
/// 2. `plan`: the tasks an upstream failure blocks (they become upstream_failed), the tasks ready to
///    enqueue (scheduled with every upstream task succeeded, or up for retry and due), and what
///    becomes of the run (it finishes when every task has, succeeds when every task did, and
///    turns running once a task has left scheduled).
///
/// After a success event only the finished tasks' direct downstream can have become ready:
/// `readyAfterSuccess` decides those from the states of the few tasks it names
/// (`tasksToRead(afterSuccessOf:)`), so a 20,000-task run costs the same per event as a 3-task one.
public struct RunAdvance: Sendable {
    public let dag: DAG

    public init(dag: DAG) { self.dag = dag }

    /// A task instance as the decisions see it.
    public struct Task: Sendable, Equatable {
        public var state: TaskState
        public var tryNumber: Int
        public var startedAt: Date?
        public var nextTryAt: Date?

        public init(state: TaskState, tryNumber: Int = 1, startedAt: Date? = nil, nextTryAt: Date? = nil) {
            self.state = state
            self.tryNumber = tryNumber
            self.startedAt = startedAt
            self.nextTryAt = nextTryAt
        }
    }

    /// A running attempt to fail because it ran past its task's timeout.
    public struct Timeout: Sendable, Equatable {
        public let task: String
        public let tryNumber: Int
        public let end: TaskSpec.FailedAttempt
        public let seconds: Double
    }

    /// What becomes of the run itself.
    public enum RunOutcome: Sendable, Equatable {
        /// Some task has yet to finish, and the run's state is right as it is.
        case unchanged
        /// The run was queued and a task has left scheduled: it is running now.
        case markRunning
        /// Every task finished; `succeeded` when every one succeeded.
        case finish(succeeded: Bool)
    }

    /// The result of a full pass.
    public struct Plan: Sendable, Equatable {
        /// Scheduled tasks that an upstream failure blocks: they become upstream_failed.
        public let blocked: [String]
        /// Tasks to enqueue now, in the DAG's order, due retries after the newly ready ones.
        public let ready: [String]
        public let outcome: RunOutcome
        /// The tasks finished after the pass (a hint for the success path's completion check).
        public let finished: Set<String>
    }

    /// Running attempts past their timeout at `now`, and how each ends. `random` draws the retry
    /// backoff's jitter, once per task (tasks timed out together do not all retry at one moment).
    public func timeouts(
        _ tasks: [String: Task], now: Date, random: () -> Double = { .random(in: 0...1) }
    ) -> [Timeout] {
        dag.tasks.compactMap { spec in
            guard let t = tasks[spec.id], t.state == .running, spec.isTimedOut(startedAt: t.startedAt, now: now)
            else { return nil }
            return Timeout(
                task: spec.id, tryNumber: t.tryNumber,
                end: spec.afterFailure(tryNumber: t.tryNumber, now: now, random: random()), seconds: spec.timeout)
        }
    }

    /// The full pass over the run's tasks at `now` (after the timeouts were carried out), for a run
    /// now in state `runState`.
    public func plan(_ tasks: [String: Task], runState: RunState, now: Date) -> Plan {
        var states = tasks.mapValues(\.state)
        let blocked = dag.blockedTasks(states: states)
        for b in blocked { states[b] = .upstreamFailed }
        var ready = dag.readyTasks(states: states)
        for spec in dag.tasks {
            guard let t = tasks[spec.id], t.state == .upForRetry, (t.nextTryAt ?? now) <= now,
                spec.upstream.allSatisfy({ states[$0] == .success })
            else { continue }
            ready.append(spec.id)
        }
        let outcome: RunOutcome
        if states.values.allSatisfy(\.isFinished) {
            outcome = .finish(succeeded: states.values.allSatisfy { $0 == .success })
        } else if runState == .queued && states.values.contains(where: { $0 != .scheduled }) {
            outcome = .markRunning
        } else {
            outcome = .unchanged
        }
        return Plan(
            blocked: blocked, ready: ready, outcome: outcome,
            finished: Set(states.filter { $0.value.isFinished }.keys))
    }

    /// The tasks whose states `readyAfterSuccess` needs after `finished` succeeded: their direct
    /// downstream tasks and those tasks' upstream ones.
    public func tasksToRead(afterSuccessOf finished: [String]) -> Set<String> {
        let candidates = Set(finished.flatMap { dag.directDownstream(of: $0) })
        return candidates.union(candidates.flatMap { dag.task($0)?.upstream ?? [] })
    }

    /// The direct downstream tasks of `finished` that are ready now: still scheduled, and every
    /// upstream task succeeded. Sorted by name.
    public func readyAfterSuccess(of finished: [String], states: [String: TaskState]) -> [String] {
        Set(finished.flatMap { dag.directDownstream(of: $0) }).filter { c in
            states[c] == .scheduled && (dag.task(c)?.upstream.allSatisfy { states[$0] == .success } ?? false)
        }.sorted()
    }

    /// Whether every task of the DAG has been seen finished (the run may be done: Postgres decides).
    public func mayBeDone(seenFinished: Set<String>) -> Bool { seenFinished.count >= dag.tasks.count }

    /// What the run's upstream DAGs allow: each of `dag.upstreamDAGs` needs a successful run for the
    /// same logical date. Waiting holds no worker: the tasks are simply not enqueued yet.
    public enum UpstreamCheck: Sendable, Equatable {
        /// Every upstream DAG's run for the date succeeded.
        case go
        /// These upstream DAGs have no run for the date yet, or it has not ended.
        case wait([String])
        /// These upstream DAGs' runs for the date failed: the run cannot succeed (until an operator
        /// clears them and this run); it ends at once with its tasks upstream-failed.
        case failed([String])
    }

    /// The check for `runs`, the state of each upstream DAG's run for the logical date.
    public func upstream(_ runs: [String: RunState]) -> UpstreamCheck {
        let failed = dag.upstreamDAGs.filter { runs[$0] == .failed }
        if !failed.isEmpty { return .failed(failed) }
        let waiting = dag.upstreamDAGs.filter { runs[$0] != .success }
        return waiting.isEmpty ? .go : .wait(waiting)
    }

    /// Whether the tick must read the whole run: when its events have stopped for more than 2 s (an
    /// event may have been lost, a DAG unpaused, an upstream DAG finished), every 10 s anyway, and
    /// when a retry is due or a running attempt is past its timeout. `sinceEvent` and
    /// `sinceFullPass` are seconds (nil: never). `running` are the running attempts' start times.
    public func needsFullPass(
        sinceEvent: Double?, sinceFullPass: Double?, retriesDue: Int, running: [(task: String, startedAt: Date?)],
        now: Date
    ) -> Bool {
        if (sinceEvent ?? .infinity) > 2 || (sinceFullPass ?? .infinity) > 10 { return true }
        if retriesDue > 0 { return true }
        return running.contains { r in dag.task(r.task)?.isTimedOut(startedAt: r.startedAt, now: now) ?? false }
    }

    /// Whether the tick needs to ask about due retries and timeouts at all (a DAG without either
    /// costs the tick nothing while its events flow).
    public var hasTimeoutsOrRetries: Bool { dag.tasks.contains { $0.timeout > 0 || $0.retries > 0 } }
}
