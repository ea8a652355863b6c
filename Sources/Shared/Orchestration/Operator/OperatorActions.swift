import Broker
import ETLSupport
import Foundation
import Metadata
import Workflow

/// What an operator does to DAGs, runs and the queues: the one implementation behind `etlctl` and
/// the web UI (pages and JSON API), so both check the same things and change the same state.
///
/// 1. Looks up what the request names (a DAG, a run of that DAG, a task of that DAG) and refuses
///    unknown names with the fix.
/// 2. Changes the metadata in Postgres (pause, a new run, cleared tasks, a failed run) or the
///    dead letters in Redis.
/// 3. After a trigger, a retry or a clear, wakes the scheduler through the broker, so it acts now
///    rather than at its next tick (a pause is seen at its next tick).
///
/// Each server is reached only by the actions that need it (pausing needs no Redis, requeueing no
/// Postgres): the connections are opened on first use.
///
/// ```swift
/// let ops = OperatorActions(registry: registry, store: { store }, queue: { queue }, actor: "etlctl")
/// let run = try ops.trigger("b2b", logicalDate: date)
/// ```
public struct OperatorActions {
    public let registry: Registry
    private let openStore: () throws -> MetadataStore
    private let openQueue: () throws -> TaskQueue
    /// Who acts ("etlctl", "web:admin"): named on the scheduler's wake-up message and in reasons.
    public let actor: String
    /// From where, for the audit trail: `client <address>` (web), `host <name>, OS user <name>` (etlctl).
    public let origin: String

    public init(
        registry: Registry, store: @escaping () throws -> MetadataStore, queue: @escaping () throws -> TaskQueue,
        actor: String, origin: String = OperatorActions.localOrigin
    ) {
        self.registry = registry
        openStore = store
        openQueue = queue
        self.actor = actor
        self.origin = origin
    }

    /// This process's host and OS user (what etlctl's actions are recorded with).
    public static var localOrigin: String {
        let user = getpwuid(geteuid()).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "uid \(geteuid())"
        return "host \(ProcessInfo.processInfo.hostName), OS user \(user)"
    }

    /// Runs an operator action and records it in the audit trail (`MetadataStore+audit`), done or
    /// refused. An action whose record cannot be written (Postgres down) stands; the miss is said
    /// on standard error.
    public func audited<T>(
        _ action: String, _ target: String, detail: String = "", _ body: () throws -> T
    ) throws -> T {
        let result: Result<T, Error> = Result { try body() }
        let error: String? =
            if case .failure(let e) = result { "\(e)" } else { nil }
        do {
            try store.recordAudit(
                actor: actor, origin: origin, action: action, target: target, detail: detail, ok: error == nil,
                error: error)
        } catch {
            FileHandle.standardError.write(Data("audit: \(action) \(target) by \(actor) not recorded: \(error)\n".utf8))
        }
        return try result.get()
    }

    /// The metadata store (opened on first use by the caller's closure).
    public var store: MetadataStore { get throws { try openStore() } }
    var queue: TaskQueue { get throws { try openQueue() } }

    /// The DAG `id` of this build, or `notFound` listing the known ones.
    public func dag(_ id: String) throws -> DAG { try registry.requireDAG(id) }

    /// The task `task` of `dag`, or `notFound` listing the DAG's tasks.
    public func task(_ dag: DAG, _ task: String) throws -> TaskSpec { try registry.requireTask(dag, task) }

    /// Checks that run `run` exists and belongs to `dag`.
    public func checkRun(_ run: Int64, of dag: String) throws {
        guard try store.run(run)?.dag == dag else {
            throw OperatorError(
                .notFound,
                "DAG '\(dag)' has no run \(run). Fix: pick one of the DAG's runs (its page, or etlctl runs list \(dag))"
            )
        }
    }

    /// Pauses or unpauses `dag` (a paused DAG gets no new runs and no new tasks).
    public func setPaused(_ dag: String, _ paused: Bool) throws {
        try audited(paused ? "pause" : "unpause", dag) {
            _ = try self.dag(dag)
            _ = try store.setPaused(dag, paused)  // the scheduler reads pauses at every tick
        }
    }

    /// The logical date of `dag`'s latest complete interval at `now`: the run its scheduler makes when
    /// the DAG is unpaused (catchup off). For a DAG without a cron schedule (manual, @once), the day
    /// before `now`'s (UTC).
    public func latestInterval(_ dag: String, now: Date = Date()) throws -> Date {
        let d = try self.dag(dag)
        if case .cron = d.schedule,
            let latest = d.schedule.dueLogicalDates(start: d.startDate, lastLogical: nil, now: now, catchup: false).last
        {
            return latest
        }
        let today = now.timeIntervalSince1970 - now.timeIntervalSince1970.truncatingRemainder(dividingBy: 86_400)
        return Date(timeIntervalSince1970: today - 86_400)
    }

    /// Creates a manual run of `dag` for `logicalDate` and wakes the scheduler; `conflict` when the
    /// DAG has a run for that date already.
    /// `params` (name to value) are checked against the DAG's declared parameters first: a wrong
    /// one is refused (`invalid`, with the fix) and no run is made.
    public func trigger(_ dag: String, logicalDate: Date, params: [String: String] = [:]) throws -> Int64 {
        // Audited with the values the run records (canonical, defaults filled in) when they are
        // valid, with those given when they are not.
        let resolved = try? self.dag(dag).resolveParams(params, type: .manual)
        let shown = resolved ?? params
        let given = shown.keys.sorted().map { "\($0)=\(shown[$0]!)" }
        let detail = (["date \(PostgresTimestamp.format(logicalDate).prefix(10))"] + given).joined(separator: " ")
        return try audited("trigger", dag, detail: detail) {
            try triggerUnaudited(dag, logicalDate: logicalDate, params: params)
        }
    }

    /// The run parameters `given` for a manual run of `dag`, checked, or `invalid` with the fix.
    public func runParams(_ dag: String, _ given: [String: String]) throws -> [String: String] {
        do { return try self.dag(dag).resolveParams(given, type: .manual) } catch let e as DAGParamError {
            throw OperatorError(.invalid, "DAG '\(dag)': \(e)")
        }
    }

    private func triggerUnaudited(_ dag: String, logicalDate: Date, params: [String: String]) throws -> Int64 {
        let d = try self.dag(dag)
        let values = try runParams(dag, params)
        guard let run = try store.createRun(d, logicalDate: logicalDate, type: .manual, params: values) else {
            let variant = d.variant(of: values)
            throw OperatorError(
                .conflict,
                "DAG '\(dag)' already has a run for \(PostgresTimestamp.format(logicalDate).prefix(10))"
                    + (variant.isEmpty ? "" : " with \(variant)") + ". "
                    + "Fix: pick another date, or clear its failed tasks "
                    + "(Clear failed on the DAG's page, or etlctl tasks clear --failed \(dag))"
            )
        }
        try queue.wakeScheduler(dag: dag, run: run, reason: "triggered", by: actor)
        return run
    }

    /// Runs `task` of run `run` again, with everything downstream of it; returns how many task
    /// instances were cleared.
    public func retry(dag: String, run: Int64, task: String) throws -> Int {
        try audited("retry", "\(dag) run \(run) task \(task)") {
            let d = try self.dag(dag)
            _ = try self.task(d, task)
            try checkRun(run, of: dag)
            let n = try store.clear(run: run, tasks: d.downstream(of: [task]).union([task]))
            try queue.wakeScheduler(dag: dag, run: run, reason: "cleared", by: actor)
            return n
        }
    }

    /// Cancels `task` of run `run`: a running attempt stops within a few seconds (its worker
    /// interrupts it and rolls back what it had not committed), one not started yet is cancelled
    /// now. A cancelled task is not retried; `retry` runs it again. What depends on it becomes
    /// upstream-failed, and the run fails.
    public func cancel(dag: String, run: Int64, task: String) throws -> MetadataStore.CancelOutcome {
        try audited("cancel", "\(dag) run \(run) task \(task)") { try cancelUnaudited(dag: dag, run: run, task: task) }
    }

    private func cancelUnaudited(dag: String, run: Int64, task: String) throws -> MetadataStore.CancelOutcome {
        let d = try self.dag(dag)
        _ = try self.task(d, task)
        try checkRun(run, of: dag)
        guard let outcome = try store.requestCancel(run: run, task: task, by: actor) else {
            throw OperatorError(
                .notFound,
                "run \(run) of '\(dag)' has no instance of task '\(task)' yet. Fix: wait until the run starts")
        }
        // Not running: the scheduler marks what depends on it now rather than at its next pass.
        if outcome == .cancelled { try queue.wakeScheduler(dag: dag, run: run, reason: "cancelled", by: actor) }
        return outcome
    }

    /// What a cancel did, in words.
    public static func describe(_ outcome: MetadataStore.CancelOutcome, task: String, run: Int64) -> String {
        switch outcome {
        case .stopping(let tryNumber):
            return "cancelling \(task) of run \(run) (try \(tryNumber)): its worker stops it within a few seconds"
        case .cancelled: return "cancelled \(task) of run \(run) before it ran"
        case .alreadyEnded(let state):
            return "\(task) of run \(run) had ended already (\(state.rawValue)): nothing to cancel"
        }
    }

    /// Restarts the failed and upstream-failed tasks of run `run` with what depends on them.
    public func clearFailed(dag: String, run: Int64) throws -> Int {
        try audited("clear-failed", "\(dag) run \(run)") { try clearFailedUnaudited(dag: dag, run: run) }
    }

    func clearFailedUnaudited(dag: String, run: Int64) throws -> Int {
        let d = try self.dag(dag)
        try checkRun(run, of: dag)
        let n = try store.clear(run: run, tasks: try Self.toClear(d, run: run, store: store))
        if n > 0 { try queue.wakeScheduler(dag: dag, run: run, reason: "cleared", by: actor) }
        return n
    }

    /// What "clear failed" restarts in a run: its failed and upstream-failed tasks and what
    /// depends on them, except what a cancelled task still blocks (a cancel stands until that task
    /// is retried itself: clearing behind it would only fail the run again).
    static func toClear(_ d: DAG, run: Int64, store: MetadataStore) throws -> Set<String> {
        let rows = try store.taskRows(run: run)
        let failed = Set(rows.filter { $0.state == "failed" || $0.state == "upstream_failed" }.map(\.task))
        let behindCancel = d.downstream(of: Set(rows.filter { $0.state == "cancelled" }.map(\.task)))
        return d.downstream(of: failed).union(failed).subtracting(behindCancel)
    }

    /// Restarts every failed task (and what depends on it) of every run of `dag`, or of every DAG
    /// when nil; returns how many task instances were cleared.
    public func clearAllFailed(dag: String?) throws -> Int {
        try audited("clear-failed", dag ?? "every DAG") { try clearAllFailedUnaudited(dag: dag) }
    }

    private func clearAllFailedUnaudited(dag: String?) throws -> Int {
        if let dag { _ = try self.dag(dag) }
        var total = 0
        for f in try store.failedTasks(dag: dag) {
            guard let d = registry.dag(f.dag) else { continue }  // a DAG no longer in this build
            let n = try store.clear(run: f.run, tasks: try Self.toClear(d, run: f.run, store: store))
            total += n
            if n > 0 { try queue.wakeScheduler(dag: f.dag, run: f.run, reason: "cleared", by: actor) }
        }
        return total
    }

    /// Marks run `run` failed with the operator's name as the reason; false when it had ended.
    public func markFailed(dag: String, run: Int64) throws -> Bool {
        try audited("mark-failed", "\(dag) run \(run)") {
            _ = try self.dag(dag)
            try checkRun(run, of: dag)
            return try store.markRunFailed(run, reason: "marked failed by \(actor)")
        }
    }

    /// Puts dead letters back on their queues (all when `ids` is nil); returns how many.
    public func requeueDeadLetters(ids: Set<String>?) throws -> Int {
        try audited("requeue", "dead letters", detail: ids.map { $0.sorted().joined(separator: ",") } ?? "all") {
            try queue.requeueDeadLetters(ids: ids)
        }
    }
}
