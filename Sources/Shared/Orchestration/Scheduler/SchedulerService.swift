import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// The scheduler: one leads (through a lease in Postgres), others wait to take over.
///
/// 1. Creates runs when their schedules are due.
/// 2. Advances runs: enqueues every task whose upstream tasks (and upstream DAGs) succeeded,
///    marks what an upstream failure blocks, fails attempts past their timeout, re-enqueues due
///    retries, and closes finished runs.
/// 3. Reacts to completion events at once (event-driven: no sleep between a task and its downstream),
///    with a one-second tick for schedules, retries and timeouts.
/// 4. On taking the lead, re-enqueues queued tasks whose message a crash lost.
public final class SchedulerService: @unchecked Sendable {  // its state is used by its one loop thread
    let env: Environment
    let registry: Registry
    let logger: Logger
    let id: String
    let schema: String
    let leaseTTL: Double
    /// Seconds between sweeps for queued tasks whose message is gone (a Redis restart can lose
    /// the last second of writes under `appendfsync everysec`).
    let reconcileEvery: Double
    let codec: MessageCodec
    private var lastReconcile = 0.0
    private var store: MetadataStore!
    private var queue: TaskQueue!
    /// Whether this scheduler leads (read by the alert sender's thread too).
    private var leading: Bool {
        get { leadingLock.withLock { leadingValue } }
        set { leadingLock.withLock { leadingValue = newValue } }
    }
    private var leadingValue = false
    /// Whether this scheduler leads now (housekeeping threads of the scheduler program ask).
    public var isLeading: Bool { leading }
    private let leadingLock = NSLock()
    /// Webhooks for failed (and, when asked, succeeded) runs and dead letters, and what posts to them.
    let alertSettings: AlertSettings
    let post: AlertSender.Post?
    private var lastRenew = 0.0
    private var lastTick = 0.0
    /// Postgres's clock, read at every lease renewal: schedules, timeouts and retries are judged
    /// on it, never on this host's wall clock.
    let clock = ServerClock()
    /// Since when Redis has been unreachable (monotonic), while it is.
    private var redisDownSince: Double?
    /// Running attempts with an expired lease enqueued again, and when (one copy per 30 s).
    private var reenqueued: [MetadataStore.AttemptKey: Double] = [:]
    private var lastLeaseSweep = 0.0
    /// Seconds a worker has to carry out a cancel before the scheduler ends the attempt itself.
    let cancelGrace: Double
    /// Per-DAG deadlines and how long a run may wait for upstream runs or inputs.
    let runDeadlines: RunDeadlines
    private var lastDeadlineCheck = 0.0

    /// `post` sends alerts (the scheduler executable gives an HTTP client); nil: none are sent, and
    /// configured webhooks are refused.
    public init(env: Environment, registry: Registry, logger: Logger, post: AlertSender.Post? = nil) throws {
        self.env = env
        alertSettings = try AlertSettings(environment: env)
        if !alertSettings.webhooks.isEmpty && post == nil {
            throw ConfigError(
                variable: "ETL_ALERT_WEBHOOKS", problem: "this program cannot send alerts",
                fix: "unset it here; the scheduler executable sends them")
        }
        self.post = post
        self.registry = registry
        self.logger = logger
        id = env["ETL_SCHEDULER_NAME"] ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        schema = env["ETL_SCHEMA"] ?? "etl"
        leaseTTL = try env.seconds("ETL_SCHEDULER_LEASE", default: 5, range: 1...600)
        reconcileEvery = try env.seconds("ETL_SCHEDULER_RECONCILE", default: 15, range: 0.5...3600)
        cancelGrace = try env.seconds("ETL_CANCEL_GRACE", default: 15, range: 1...3600)
        runDeadlines = try RunDeadlines(environment: env, registry: registry)
        codec = try MessageCodec(environment: env)
    }

    /// Set by the service's graceful shutdown.
    public let stop = StopFlag()

    /// Runs until `stop` is set; gives the lease up on the way out.
    public func runBlocking() throws {
        // A row lock held by a frozen worker's open transaction ends the scheduler's wait after 5 s
        // (the statement is tried again on the next pass), instead of stopping the scheduling.
        var config = try PostgresConfig(environment: env)
        config.sessionLimits = [("lock_timeout", "5000")]
        let pg = try PostgresConnection(config: config)
        try Migrator.run(pg, schema: schema, setup: registry.setup)
        store = MetadataStore(pg: pg, schema: schema)
        try store.sync(dags: registry.dags)
        queue = TaskQueue(
            redis: try RedisConnection(config: RedisConfig(environment: env)), keys: RedisKeys(environment: env))
        try queue.ensureGroups(queues: registry.queues.isEmpty ? ["default"] : registry.queues)
        logger.info("scheduler started", metadata: ["scheduler": "\(id)", "dags": "\(registry.dags.count)"])
        if !alertSettings.targets.isEmpty {
            AlertSender(
                settings: alertSettings, env: env, schema: schema, logger: logger, post: post,
                isLeading: { [weak self] in self?.leading ?? false }, stop: stop
            ).start()
            let mail = alertSettings.mailTo.isEmpty ? "" : " and \(alertSettings.mailTo.count) e-mail address(es)"
            logger.info("alerts go to \(alertSettings.webhooks.count) webhook(s)\(mail)")
        }
        var errors = ErrorBackoff()
        while !stop.isSet {
            do {
                try step()
                redisDownSince = nil
                errors.succeeded(logger: logger)
            } catch let e as RedisError where e.isConnectionProblem {
                logger.warning("Redis: \(e); retrying")
                let since = redisDownSince ?? monotonicSeconds()
                redisDownSince = since
                // A leader that cannot reach Redis cannot enqueue: it gives the lease up, so a
                // scheduler that reaches Redis leads instead (one that cannot does not take it).
                if leading && monotonicSeconds() - since > leaseTTL / 2 {
                    logger.warning(
                        "Redis unreachable for \(Int(monotonicSeconds() - since)) s: giving the lease up",
                        metadata: ["scheduler": "\(id)"])
                    try? store.releaseLease(holder: id)
                    try? store.setFence(nil)
                    leading = false
                }
                sleepSeconds(0.5)
            } catch let e as PostgresError where e.isConnectionProblem {
                logger.warning("Postgres: \(e); retrying")
                leading = false
                sleepSeconds(0.5)
            } catch let e as PostgresError where e.sqlState == MetadataStore.fencedOut {
                // Another scheduler took the lease while this one was not looking (paused, cut
                // off): Postgres refused the write; stand by.
                logger.warning("fenced out: another scheduler leads now; standing by", metadata: ["scheduler": "\(id)"])
                leading = false
                try? store.setFence(nil)
                sleepSeconds(min(1, leaseTTL / 3))
            } catch {
                // Anything else (Redis out of memory or read-only, a statement Postgres refused):
                // the scheduler lives on, backing off, with one log line per kind of error.
                sleepSeconds(errors.failed(error, logger: logger))
            }
        }
        if leading { try? store.releaseLease(holder: id) }
        logger.info("scheduler stopped", metadata: ["scheduler": "\(id)"])
    }

    private func step() throws {
        let now = monotonicSeconds()
        if !leading || now - lastRenew > leaseTTL / 3 {
            // Only a scheduler that reaches Redis may lead.
            if !leading { try queue.redis.command("PING") }
            let (token, dbNow) = try store.acquireLease(holder: id, ttl: leaseTTL)
            clock.set(dbNow)
            lastRenew = now
            // Every renewal sets the session's fence again (a reconnected session starts without).
            try store.setFence(token)
            if token != nil && !leading {
                leading = true
                logger.info("leading the scheduling", metadata: ["scheduler": "\(id)", "fencing_token": "\(token!)"])
                try reconcile(olderThan: 0)
                lastReconcile = monotonicSeconds()
            } else if token == nil {
                if leading { logger.warning("lost the lease; standing by") }
                leading = false
                sleepSeconds(min(1, leaseTTL / 3))
                return
            }
        }
        if now - lastTick >= 1 {
            lastTick = now
            try tick()
        }
        if now - lastLeaseSweep >= 2 {
            lastLeaseSweep = now
            try reenqueueExpired()
            try endOverdueCancels()
        }
        if now - lastDeadlineCheck >= 10 {
            lastDeadlineCheck = now
            try checkDeadlines()
        }
        if now - lastReconcile >= reconcileEvery {
            lastReconcile = now
            // Only tasks queued a while ago: a message added a moment ago is surely still there.
            try reconcile(olderThan: min(10, reconcileEvery))
        }
        let events = try queue.readEvents(consumer: id, block: 0.25, count: 1000)
        var byRun: [Int64: [SchedulerNotice]] = [:]
        for e in events { if let n = e.notice { byRun[n.runID, default: []].append(n) } }
        for (runID, notices) in byRun.sorted(by: { $0.key < $1.key }) {
            lastEvent[runID] = monotonicSeconds()
            guard let run = try store.run(runID) else { continue }
            // Only successes take the fast path; a failure, a retry or a wake-up reads the whole run.
            let succeeded = notices.compactMap { n -> [String]? in
                guard case .completion(let e) = n, e.state == TaskState.success.rawValue else { return nil }
                return e.allTasks
            }
            if succeeded.count == notices.count {
                try advanceAfterSuccess(run, finished: succeeded.flatMap { $0 })
            } else {
                // Tasks that failed for good are told about on their own, before their run ends.
                let failed = notices.flatMap { n -> [String] in
                    guard case .completion(let e) = n, e.state == TaskState.failed.rawValue else { return [] }
                    return e.allTasks
                }
                try store.recordTaskAlerts(run: runID, tasks: failed, targets: alertSettings.targets)
                try advance(run)
            }
        }
        // A task that ended may have freed a pool slot that a waiting run's ready task needs.
        if !poolWaiting.isEmpty && events.contains(where: { if case .completion = $0.notice { true } else { false } }) {
            for id in poolWaiting.sorted() {
                if let run = try store.run(id) { try advance(run) }
            }
        }
        try queue.ackEvents(events.map(\.id))
    }

    /// The fast path for the common event: tasks succeeded. Only their direct downstream tasks
    /// can have become ready, so only those (and their upstream tasks) are read, instead of the
    /// whole run; a 20,000-task run costs the same per event as a 3-task one.
    private func advanceAfterSuccess(_ run: MetadataStore.Run, finished: [String]) throws {
        guard !run.state.isFinished, let dag = registry.dag(run.dag) else { return }
        if pausedCache.contains(dag.id) { return }
        let rules = RunAdvance(dag: dag)
        let needed = rules.tasksToRead(afterSuccessOf: finished)
        if !needed.isEmpty {
            let states = try store.states(run: run.id, tasks: Array(needed))
            try enqueue(dag: dag, run: run, tasks: rules.readyAfterSuccess(of: finished, states: states))
        }
        // The run may be done only once every task has been seen finished; then Postgres says.
        var seen = finishedSeen[run.id, default: []]
        seen.formUnion(finished)
        finishedSeen[run.id] = seen
        if rules.mayBeDone(seenFinished: seen), let succeeded = try store.allFinished(run: run.id) {
            try finish(dag: dag, run: run, ok: succeeded)
        }
    }

    private var pausedCache = Set<String>()
    /// Per active run: tasks seen finished (from events and full passes), when its last event
    /// came and when it last had a full pass. A hint only: Postgres decides.
    private var finishedSeen: [Int64: Set<String>] = [:]
    private var lastEvent: [Int64: Double] = [:]
    private var lastFullPass: [Int64: Double] = [:]
    /// Runs waiting for their input data, and what for (logged once per change).
    private var inputWaits: [Int64: String] = [:]

    /// Whether the tick must read the whole run: when its events have stopped for a while (an
    /// event may have been lost, a DAG unpaused, an upstream DAG finished), every 10 s anyway,
    /// and when an attempt is past its timeout or a retry is due. A run whose events flow costs
    /// the tick one small query, or none when no task has a timeout or retries.
    private func needsFullPass(_ run: MetadataStore.Run, dag: DAG) throws -> Bool {
        let now = monotonicSeconds()
        let rules = RunAdvance(dag: dag)
        let sinceEvent = lastEvent[run.id].map { now - $0 }
        let sinceFullPass = lastFullPass[run.id].map { now - $0 }
        if rules.needsFullPass(
            sinceEvent: sinceEvent, sinceFullPass: sinceFullPass, retriesDue: 0, running: [], now: clock.now())
        {
            return true
        }
        guard rules.hasTimeoutsOrRetries else { return false }
        let due = try store.dueWork(run: run.id)
        return rules.needsFullPass(
            sinceEvent: sinceEvent, sinceFullPass: sinceFullPass, retriesDue: due.retriesDue, running: due.running,
            now: clock.now())
    }

    private func finish(dag: DAG, run: MetadataStore.Run, ok: Bool) throws {
        // The alert first: a scheduler that dies between the two finishes the run again on the next
        // pass, and the alert is made once (by its key).
        if !ok || alertSettings.onSuccess {
            try store.recordRunAlert(run: run.id, failed: !ok, targets: alertSettings.targets)
        }
        try store.setRunState(run.id, ok ? .success : .failed)
        poolWaiting.remove(run.id)
        finishedSeen[run.id] = nil
        lastEvent[run.id] = nil
        lastFullPass[run.id] = nil
        logger.info(
            "run finished", metadata: ["dag": "\(dag.id)", "run": "\(run.id)", "state": "\(ok ? "success" : "failed")"])
        // The DAG's next run (its slot is free) and runs of other DAGs waiting on this one can go now.
        let waiting = Set(registry.dags.filter { $0.upstreamDAGs.contains(dag.id) }.map(\.id)).union([dag.id])
        for r in try store.activeRuns(dag: nil).map(\.run) where waiting.contains(r.dag) && r.id != run.id {
            try advance(r)
        }
    }

    /// Due scheduled runs, then every active run.
    private func tick() throws {
        let paused = try store.pausedDAGs()
        pausedCache = paused
        // Every DAG's latest scheduled run in one query (not one per DAG every second).
        let lastScheduled = try store.lastScheduledLogicalDates()
        for dag in registry.dags where !paused.contains(dag.id) {
            for date in dag.schedule.dueLogicalDates(
                start: dag.startDate, lastLogical: lastScheduled[dag.id], now: clock.now(), catchup: dag.catchup)
            {
                if let run = try store.createRun(dag, logicalDate: date, type: .scheduled) {
                    logger.info(
                        "created run",
                        metadata: [
                            "dag": "\(dag.id)", "run": "\(run)", "logical_date": "\(PostgresTimestamp.format(date))",
                        ])
                }
            }
        }
        let withWork = try store.activeRuns(dag: nil)
        let active = withWork.map(\.run)
        // Runs ended elsewhere (marked failed by an operator) leave the hints.
        let ids = Set(active.map(\.id))
        finishedSeen = finishedSeen.filter { ids.contains($0.key) }
        lastEvent = lastEvent.filter { ids.contains($0.key) }
        lastFullPass = lastFullPass.filter { ids.contains($0.key) }
        inputWaits = inputWaits.filter { ids.contains($0.key) }
        poolWaiting = poolWaiting.filter { ids.contains($0) }
        // Runs with work under way first; then, per DAG, the waiting runs its max active runs let start,
        // one query for all (a backfill of a thousand dates costs the tick no query per run).
        for a in withWork where a.inFlight {
            guard let dag = registry.dag(a.run.dag), !paused.contains(dag.id) else { continue }
            // Work under way holds its slot: no admission query for it.
            if try needsFullPass(a.run, dag: dag) { try advance(a.run, admitted: true) }
        }
        // Queued runs whose upstream run for their date failed end now, also those that their DAG's
        // max active runs keep waiting (an upstream run marked failed by an operator wakes nothing).
        let waitingOnOthers = withWork.filter { !$0.inFlight && $0.run.state == .queued }.compactMap { a in
            registry.dag(a.run.dag).flatMap { d in
                d.upstreamDAGs.isEmpty || paused.contains(d.id) ? nil : (run: a.run.id, upstream: d.upstreamDAGs)
            }
        }
        var ended = Set<Int64>()
        if !waitingOnOthers.isEmpty {
            ended = try store.runsWithFailedUpstream(waitingOnOthers)
            for a in withWork where ended.contains(a.run.id) { try advance(a.run) }
        }
        for (dagID, runs) in Dictionary(grouping: withWork.filter { !ended.contains($0.run.id) }, by: \.run.dag)
            .sorted(by: { $0.key < $1.key })
        {
            guard let dag = registry.dag(dagID), !paused.contains(dag.id) else { continue }
            let byID = Dictionary(uniqueKeysWithValues: runs.map { ($0.run.id, $0.run) })
            var (free, order) = RunLimits.candidates(
                runs.map { RunLimits.ActiveRun(id: $0.run.id, logicalDate: $0.run.logicalDate, inFlight: $0.inFlight) },
                limit: dag.maxActiveRuns, inDateOrder: dag.upstreamDAGs.isEmpty)
            for id in order where free > 0 {
                guard let run = byID[id], try needsFullPass(run, dag: dag) else { continue }
                if try advance(run, admitted: true) { free -= 1 }
            }
        }
    }

    /// The full pass over one run (events other than success, the tick, a trigger). Paused DAGs
    /// come from the tick's read, at most a second old.
    /// Returns whether a run without work under way started (tasks were enqueued). `admitted`: the
    /// caller checked the DAG's max active runs already (the tick).
    @discardableResult
    private func advance(_ run: MetadataStore.Run, admitted: Bool = false) throws -> Bool {
        guard !run.state.isFinished else { return false }
        guard let dag = registry.dag(run.dag) else { return false }
        if pausedCache.contains(dag.id) { return false }
        let rules = RunAdvance(dag: dag)
        let upstream = rules.upstream(try store.runStates(of: dag.upstreamDAGs, logicalDate: run.logicalDate))
        if case .failed(let dags) = upstream {
            // It cannot succeed: it ends now rather than wait for ever, also while its DAG's runs of
            // other dates hold every slot (clearing the upstream runs and this one starts it again).
            // `run` may be a caller's stale copy (finish() walks a list read before): ended already
            // (by a nested finish, or it succeeded), it is left as it is.
            guard let now = try store.run(run.id), !now.state.isFinished else { return false }
            let waiting = try store.instances(run: run.id).filter { $0.value.state == .scheduled }.map(\.key).sorted()
            try store.markUpstreamFailed(run: run.id, tasks: waiting)
            logger.warning(
                "run failed: an upstream DAG's run for its date failed",
                metadata: ["dag": "\(dag.id)", "run": "\(run.id)", "upstream": "\(dags.joined(separator: ","))"])
            if try store.allFinished(run: run.id) != nil { try finish(dag: dag, run: run, ok: false) }
            return false
        }
        // A queued run starts only when the DAG's max active runs allow it (oldest date first); a
        // running one holds its slot to the end.
        if run.state == .queued && !admitted {
            let active = try store.activeRuns(dag: dag.id).map {
                RunLimits.ActiveRun(id: $0.run.id, logicalDate: $0.run.logicalDate, inFlight: $0.inFlight)
            }
            guard
                RunLimits.mayStart(
                    run.id, among: active, limit: dag.maxActiveRuns, inDateOrder: dag.upstreamDAGs.isEmpty)
            else {
                return false
            }
        }
        // Waiting on another DAG holds no worker: the tasks are simply not enqueued yet.
        switch upstream {
        case .go: break
        case .wait(let dags):
            try failIfWaitedTooLong(run, dag: dag, for: "the runs of \(dags.joined(separator: ", ")) for its date")
            return false
        case .failed: return false  // ended above
        }
        lastFullPass[run.id] = monotonicSeconds()
        // Its input data for the date must be complete before it starts (a watermark, whoever loads it).
        if run.state == .queued, let check = registry.inputs[dag.id],
            let waiting = try check(store.pg, store.schema, run.logicalDate)
        {
            if inputWaits[run.id] != waiting {
                inputWaits[run.id] = waiting
                logger.info(
                    "run waits for its inputs", metadata: ["dag": "\(dag.id)", "run": "\(run.id)", "for": "\(waiting)"])
            }
            try failIfWaitedTooLong(run, dag: dag, for: "its inputs (\(waiting))")
            return false
        }
        inputWaits[run.id] = nil
        var tasks = try store.instances(run: run.id).mapValues(\.progress)

        // Attempts past their timeout fail (fenced by try number: a late worker cannot undo it).
        var timedOut = false
        for t in rules.timeouts(tasks, now: clock.now()) {
            // Its runner stops: the backends it registered under the lease are ended first.
            try store.endLeaseBackends(run: run.id, task: t.task, tryNumber: t.tryNumber)
            if try store.finishAttempt(
                run: run.id, task: t.task, tryNumber: t.tryNumber, state: t.end.state,
                error: "timed out after \(t.seconds) s", retryAt: t.end.retryAt,
                log: "--- failed by the scheduler: execution timeout of \(t.seconds) s ---\n")
            {
                logger.warning(
                    "task timed out",
                    metadata: [
                        "dag": "\(dag.id)", "task": "\(t.task)", "run": "\(run.id)",
                        "started_at": "\(tasks[t.task]?.startedAt.map(PostgresTimestamp.format) ?? "-")",
                        "now": "\(PostgresTimestamp.format(clock.now()))",
                    ])
                timedOut = true
            }
        }
        if timedOut {
            tasks = try store.instances(run: run.id).mapValues(\.progress)
            try store.recordTaskAlerts(
                run: run.id, tasks: tasks.filter { $0.value.state == .failed }.map(\.key),
                targets: alertSettings.targets)
        }

        let plan = rules.plan(tasks, runState: run.state, now: clock.now())
        if !plan.blocked.isEmpty { try store.markUpstreamFailed(run: run.id, tasks: plan.blocked) }
        let enqueued = try enqueue(dag: dag, run: run, tasks: plan.ready, fullPass: true)
        finishedSeen[run.id] = plan.finished
        switch plan.outcome {
        case .finish(let succeeded): try finish(dag: dag, run: run, ok: succeeded)
        case .markRunning: try store.setRunState(run.id, .running)
        case .unchanged:
            // A queued run whose first tasks were just enqueued holds its slot from now on.
            if run.state == .queued && enqueued > 0 { try store.setRunState(run.id, .running) }
        }
        return run.state == .queued && enqueued > 0
    }

    /// Marks `tasks` queued and adds their signed messages in chunks, one statement and one
    /// pipeline each: a first chunk of 250 so workers start at once, then chunks doubling up to
    /// 4,000 while they work (fewer, larger statements for the rest).
    @discardableResult
    private func enqueue(dag: DAG, run: MetadataStore.Run, tasks ready: [String], fullPass: Bool = false) throws -> Int
    {
        let tasks = try withinPools(dag: dag, run: run, ready, fullPass: fullPass)
        var enqueued = 0
        let date = PostgresTimestamp.format(run.logicalDate)
        var start = 0
        var size = 250
        while start < tasks.count {
            let chunk = Array(tasks[start..<min(start + size, tasks.count)])
            start += chunk.count
            size = min(size * 2, 4000)
            let moved = try store.markQueued(run: run.id, tasks: chunk)
            guard !moved.isEmpty else { continue }
            enqueued += moved.count
            var encoded: [(queue: String, body: [UInt8], signature: String)] = []
            // In the order given (the DAG's), not the order the UPDATE happened to return them:
            // a worker fetching several runs them one after another in that order.
            let position = Dictionary(chunk.enumerated().map { ($1, $0) }) { a, _ in a }
            for m in moved.sorted(by: { position[$0.task, default: 0] < position[$1.task, default: 0] }) {
                let spec = dag.task(m.task)!
                let message = TaskMessage(
                    id: m.messageID, dag: dag.id, runID: run.id, task: m.task, logicalDate: date,
                    tryNumber: m.tryNumber, queue: spec.queue, timeoutSeconds: spec.timeout, arguments: spec.arguments)
                let (body, sig) = try codec.encode(message)
                encoded.append((spec.queue, body, sig))
            }
            try queue.enqueue(encoded: encoded)
        }
        return enqueued
    }

    /// Runs with a ready task held back by a full pool: read again after the next completions.
    private var poolWaiting = Set<Int64>()

    /// `ready` less the pooled tasks for which their pool has no free slot now (they stay
    /// scheduled; the run is looked at again when tasks end). Slots are counted over every active
    /// run's queued and running tasks, so a worker's prefetch can never hold more than a pool allows.
    private func withinPools(dag: DAG, run: MetadataStore.Run, _ ready: [String], fullPass: Bool) throws -> [String] {
        guard ready.contains(where: { dag.task($0)?.pool != nil }) else {
            // Only a full pass sees every ready task of the run: only it may say none is held.
            if fullPass { poolWaiting.remove(run.id) }
            return ready
        }
        var used: [String: Int] = [:]
        for b in try store.busyTasks() {
            if let p = registry.dag(b.dag)?.task(b.task)?.pool { used[p, default: 0] += b.count }
        }
        let decision = PoolSlots.admit(
            ready.map { (task: $0, pool: dag.task($0)?.pool) }, used: used, slots: registry.pools)
        if !decision.held.isEmpty {
            poolWaiting.insert(run.id)
        } else if fullPass {
            poolWaiting.remove(run.id)
        }
        return decision.admitted
    }

    /// Running attempts whose lease expired (on Postgres's clock) more than 2 s ago: their runner
    /// died, froze or was cut off, and no live worker took their message over (it was lost, or it
    /// is pending under a consumer whose worker still heartbeats to Redis though it cannot reach
    /// Postgres). A copy of the message goes to the queue again (same try, same id): the worker
    /// that takes it takes the lease over. A copy that finds the lease held again is acknowledged
    /// away, so a copy too many is harmless; one per attempt per 30 s.
    private func reenqueueExpired() throws {
        let now = monotonicSeconds()
        reenqueued = reenqueued.filter { now - $0.value < 30 }
        var fixed = 0
        for q in try store.expiredLeases(grace: 2) {
            let key = MetadataStore.AttemptKey(run: q.run, task: q.task, tryNumber: q.tryNumber)
            guard reenqueued[key] == nil, let message = message(again: q) else { continue }
            try queue.enqueue(message, codec: codec)
            reenqueued[key] = now
            fixed += 1
        }
        if fixed > 0 {
            logger.warning("enqueued \(fixed) running task(s) again: their runner's lease expired")
        }
    }

    /// A run that waited for upstream runs or its inputs longer than `ETL_UPSTREAM_WAIT_LIMIT` ends
    /// as failed, its tasks upstream-failed with the reason, instead of waiting for ever (clearing
    /// it makes it wait again, from then).
    private func failIfWaitedTooLong(_ run: MetadataStore.Run, dag: DAG, for what: String) throws {
        guard let limit = runDeadlines.waitLimit, try store.waitedLonger(run: run.id, than: limit) else { return }
        let reason =
            "waited over \(RunDeadlines.minutes(limit)) min for \(what) (ETL_UPSTREAM_WAIT_LIMIT); "
            + "once they are there, clear this run's tasks to run it"
        try store.failWaitingTasks(run: run.id, reason: reason)
        logger.warning("run failed: \(reason)", metadata: ["dag": "\(dag.id)", "run": "\(run.id)"])
        if try store.allFinished(run: run.id) != nil { try finish(dag: dag, run: run, ok: false) }
    }

    /// Scheduled runs not finished by their DAG's deadline (`ETL_DAG_DEADLINES`) raise a
    /// `deadline_missed` alert, once per run; the run goes on.
    private func checkDeadlines() throws {
        guard !runDeadlines.deadlines.isEmpty else { return }
        let now = clock.now()
        for run in try store.unfinishedScheduledRuns(dags: Array(runDeadlines.deadlines.keys))
        where !deadlineMissed.contains(run.id) {
            guard let dag = registry.dag(run.dag), let due = runDeadlines.due(dag, logicalDate: run.logicalDate),
                now > due
            else { continue }
            deadlineMissed.insert(run.id)
            let message =
                "not finished \(RunDeadlines.minutes(runDeadlines.deadlines[dag.id] ?? 0)) min after its interval "
                + "ended (deadline \(PostgresTimestamp.format(due))); it is \(run.state.rawValue)"
            logger.warning(
                "deadline missed: \(message)", metadata: ["dag": "\(dag.id)", "run": "\(run.id)"])
            try store.recordDeadlineAlert(run: run.id, message: message, targets: alertSettings.targets)
        }
    }
    private var deadlineMissed = Set<Int64>()

    /// Cancelled attempts whose worker did not stop them within `ETL_CANCEL_GRACE` (it froze, was
    /// cut off, or died with the request standing): the sessions registered under their lease are
    /// ended (their open transactions roll back) and the attempt is recorded cancelled, fenced as a
    /// timeout is, so the late runner's end is refused.
    private func endOverdueCancels() throws {
        for c in try store.overdueCancels(after: cancelGrace) {
            try store.endLeaseBackends(run: c.key.run, task: c.key.task, tryNumber: c.key.tryNumber)
            if try store.finishAttempt(
                run: c.key.run, task: c.key.task, tryNumber: c.key.tryNumber, state: .cancelled,
                error: "cancelled by \(c.by)", retryAt: nil,
                log: "--- cancelled by \(c.by); its worker did not stop it within \(cancelGrace) s, so the "
                    + "scheduler ended its sessions ---\n")
            {
                logger.warning(
                    "ended a cancelled task its worker did not stop",
                    metadata: ["dag": "\(c.dag)", "task": "\(c.key.task)", "run": "\(c.key.run)"])
                if let run = try store.run(c.key.run) { try advance(run) }
            }
        }
    }

    /// The message of an attempt enqueued again (same try, same id), or nil when its DAG or task is
    /// no longer in this build.
    private func message(again q: MetadataStore.EnqueuedAttempt) -> TaskMessage? {
        guard let spec = registry.dag(q.dag)?.task(q.task) else { return nil }
        return TaskMessage(
            id: q.messageID ?? UUID().uuidString.lowercased(), dag: q.dag, runID: q.run, task: q.task,
            logicalDate: PostgresTimestamp.format(q.logicalDate), tryNumber: q.tryNumber,
            queue: q.queue, timeoutSeconds: spec.timeout, arguments: spec.arguments)
    }

    /// After a crash between marking a task queued and adding its message, the message is missing:
    /// find queued tasks whose message is in no stream and add it again (same try, same id).
    private func reconcile(olderThan seconds: Double) throws {
        let queued = try store.queuedInstances(olderThan: seconds)
        guard !queued.isEmpty else { return }
        var present = Set<String>()
        for q in Set(queued.map(\.queue)) { present.formUnion(try queue.messageIDs(inQueue: q)) }
        var fixed = 0
        for q in queued where !(q.messageID.map(present.contains) ?? false) {
            guard let message = message(again: q) else { continue }
            try queue.enqueue(message, codec: codec)
            fixed += 1
        }
        if fixed > 0 { logger.warning("re-enqueued \(fixed) queued task(s) whose message was lost") }
    }
}
