import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// One worker process: `concurrency` slots, each a thread with its own Redis and Postgres
/// connections, plus a heartbeat thread.
///
/// Messages travel in batches (up to `prefetch` per fetch): fetch (they stay pending in Redis) →
/// verify signatures → look up the tasks → `startAttempts` (skips finished or superseded attempts)
/// → run the operations and record their ends in one Postgres transaction → `complete` (ack +
/// delete + completion events, atomically). See `handle`.
public final class WorkerService: @unchecked Sendable {
    let id: String
    let env: Environment
    let registry: Registry
    let queues: [String]
    let concurrency: Int
    let deadAfter: Double
    let grace: Double
    /// Messages a slot takes at once when several wait (`--prefetch`, `ETL_WORKER_PREFETCH`).
    let prefetch: Int
    let schema: String
    let logger: Logger
    /// Seconds an attempt's lease lasts unless renewed (`ETL_LEASE_TTL`, default 10); the renewer
    /// pushes it on every quarter of that.
    let leaseTTL: Double
    /// Seconds between writes of the running tasks' new log lines (`ETL_LOG_FLUSH_EVERY`, default 1).
    let logFlushEvery: Double
    /// Takeovers after which an attempt's message goes to the dead letters (`ETL_MAX_DELIVERIES`).
    let maxDeliveries: Int
    /// The sessions of the tasks' own connections: worker session limits (PostgresConfig.worker).
    let pgConfig: PostgresConfig
    /// The slots' sessions: the lock timeout only. A slot's batch transaction stays open, idle,
    /// while a task works on its own connections (a b2b load for minutes): it must not be ended
    /// for that; a frozen slot's is ended by the take-over of its lease.
    let slotConfig: PostgresConfig
    /// Makes this process's runner ids unlike those of an earlier process of the same name.
    let nonce = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    /// Postgres's clock as the renewer last read it: retry times are set on it.
    let clock = ServerClock()
    /// Set by the service's graceful shutdown; the slots and the heartbeat check it.
    public let stop = StopFlag()
    private var ended: Outcome?
    /// Set once the grace ran out: the heartbeat stops, so the mark as dead stays.
    private var handingBack = false
    /// How the last run ended (nil while it runs).
    public var outcome: Outcome? { lock.withLock { ended } }
    func setOutcome(_ o: Outcome) { lock.withLock { ended = o } }
    private let lock = NSLock()
    private var current: [Int: String] = [:]
    private var running = 0

    public init(
        env: Environment, registry: Registry, queues: [String], concurrency: Int, prefetch: Int?, logger: Logger
    ) throws {
        self.env = env
        self.registry = registry
        self.queues = queues
        self.concurrency = concurrency
        slotGates = (0..<max(1, concurrency)).map { _ in NSLock() }
        self.logger = logger
        let host = ProcessInfo.processInfo.hostName
        id = env["ETL_WORKER_NAME"] ?? "\(host)-\(getpid())"
        deadAfter = try env.seconds("ETL_WORKER_DEAD_AFTER", default: 5, range: 1...3600)
        grace = try env.seconds("ETL_WORKER_GRACE", default: 30, range: 0...86_400)
        schema = env["ETL_SCHEMA"] ?? "etl"
        self.prefetch = try prefetch ?? env.integer("ETL_WORKER_PREFETCH", default: 64, range: 1...1000)
        leaseTTL = try env.seconds("ETL_LEASE_TTL", default: 10, range: 2...3600)
        logFlushEvery = try env.seconds("ETL_LOG_FLUSH_EVERY", default: 1, range: 0.1...60)
        maxDeliveries = try env.integer("ETL_MAX_DELIVERIES", default: 5, range: 1...1000)
        pgConfig = try PostgresConfig.worker(environment: env)
        var slot = pgConfig
        slot.sessionLimits = pgConfig.sessionLimits.filter { $0.name != "idle_in_transaction_session_timeout" }
        slotConfig = slot
    }

    /// The runner id of a slot: what an attempt's lease names.
    func runner(_ slot: Int) -> String { "\(id)/\(slot)#\(nonce)" }

    /// The leases the slots hold (started attempts not ended yet), and those the renewer found gone.
    private var held: [Int: Set<MetadataStore.Lease>] = [:]
    private var lostLeases = Set<MetadataStore.Lease>()

    /// Every lease the slots hold (call with `lock` held).
    private var allHeld: Set<MetadataStore.Lease> { held.values.reduce(into: []) { $0.formUnion($1) } }

    /// Per slot, while it runs a task: that task's lease and since when (monotonic seconds).
    private var runningLease: [Int: (lease: MetadataStore.Lease, since: Double)] = [:]
    /// Leases handed back from behind a task that ran for the lease's time (the slot skips them),
    /// and the slots whose hand-back statement is under way (they start nothing meanwhile).
    private var handedBack: [Int: Set<MetadataStore.Lease>] = [:]
    private var handBackInFlight = Set<Int>()
    /// Per slot, the leases whose task began in the round under way: never handed back (a task that
    /// ran is in the round's transaction, which commits or rolls back as one).
    private var begun: [Int: Set<MetadataStore.Lease>] = [:]

    /// The leases an operator asked to stop, with who asked (from the last renewal), and those
    /// whose request was logged already.
    private var cancelRequests: [MetadataStore.Lease: String] = [:]
    private var cancelSeen = Set<MetadataStore.Lease>()
    /// Per slot, while a task's own code runs: its lease and the slot session's pid (a cancel
    /// interrupts that session's statement only then, never the slot's own bookkeeping).
    private var interruptible: [Int: (lease: MetadataStore.Lease, pid: Int32)] = [:]
    /// Per slot, its session's backend (as it last started attempts): a cancel of one task never
    /// interrupts these through the lease's list (they serve the whole batch).
    private var slotSessions: [Int: Int32] = [:]
    /// Per slot, held while a cancel is sent to its session, and by the slot as it leaves the
    /// task's code: the slot cannot move on to other work while that statement is cancelled.
    private let slotGates: [NSLock]

    func cancelRequest(_ lease: MetadataStore.Lease) -> String? { lock.withLock { cancelRequests[lease] } }

    /// Per slot, the task running now: its context, attempt and the worker column of its attempt row.
    private var liveLogs: [Int: (ctx: TaskContext, key: MetadataStore.AttemptKey, worker: String)] = [:]

    /// Writes the running tasks' new log lines every second (`ETL_LOG_FLUSH_EVERY`), from a thread
    /// and a session of its own, so that `etlctl logs --follow` and the attempt page show them as
    /// they come and a worker's death loses at most the last second. A line not written (Postgres
    /// out of reach, the attempt ended or taken over meanwhile) stays with the task and goes with a
    /// later flush or with the attempt's end.
    private func flushLoop() {
        var config = pgConfig
        config.applicationName = "\(pgConfig.applicationName) log flusher"
        config.reconnectTimeout = 1
        // A flush never waits long: the attempt's end waits for a flush under way.
        config.sessionLimits = [("lock_timeout", "1000"), ("statement_timeout", "3000")]
        var store: MetadataStore?
        while !stop.isSet || runningCount > 0 {
            sleepSeconds(logFlushEvery)
            let live = lock.withLock { Array(liveLogs.values) }
            guard !live.isEmpty else { continue }
            do {
                if store == nil { store = MetadataStore(pg: try PostgresConnection(config: config), schema: schema) }
            } catch {
                continue
            }
            for l in live {
                l.ctx.flush { chunk in
                    (try? store?.appendLog(l.key, worker: l.worker, chunk)) ?? false
                }
            }
        }
        store?.pg.close()
    }

    /// Interrupts the tasks an operator asked to stop: the statement running on their own
    /// connections, and on the slot's session while the task's code runs on it (under the lock, so
    /// the slot cannot go on to other work meanwhile). Sent again at every renewal while the task
    /// runs: a cancel that arrived between two statements does nothing, and the task's next
    /// `checkDeadline` stops it.
    private func interruptCancelled(store: MetadataStore, _ requests: [MetadataStore.Lease: String]) {
        let fresh = lock.withLock { () -> [MetadataStore.Lease: String] in
            cancelRequests = requests
            let fresh = requests.filter { !cancelSeen.contains($0.key) }
            cancelSeen = cancelSeen.intersection(requests.keys).union(requests.keys)
            return fresh
        }
        for (lease, by) in fresh {
            logger.warning(
                "cancel requested by \(by): \(lease.key.task) of run \(lease.key.run) try \(lease.key.tryNumber) stops",
                metadata: ["worker": "\(id)"])
        }
        for lease in requests.keys {
            let (slot, sessions) = lock.withLock {
                (interruptible.first { $0.value.lease == lease }?.key, Array(slotSessions.values))
            }
            // The global lock is never held across the statement: only the gate of the slot whose
            // session runs the task's code, checked again once held.
            let send = { (slotPID: Int32?) in
                do { try store.cancelStatements(lease, slotPID: slotPID, slotSessions: sessions) } catch {
                    self.logger.warning(
                        "could not interrupt a cancelled task: \(error)", metadata: ["worker": "\(self.id)"])
                }
            }
            if let slot {
                slotGates[slot].withLock {
                    let pid = lock.withLock { interruptible[slot]?.lease == lease ? interruptible[slot]?.pid : nil }
                    send(pid)
                }
            } else {
                send(nil)
            }
        }
    }

    /// The slot's attempts just started (or started again): what was handed back before is over.
    private func hold(_ slot: Int, _ leases: [MetadataStore.Lease]) {
        lock.withLock {
            held[slot, default: []].formUnion(leases)
            handedBack[slot] = nil
            begun[slot] = nil
        }
    }

    /// Marks `job` as the one the slot runs now, unless it was handed back (then the slot skips it).
    private func beginRunning(_ job: Job, slot: Int) -> Bool {
        lock.withLock {
            if handedBack[slot]?.contains(job.lease) == true { return false }
            runningLease[slot] = (job.lease, monotonicSeconds())
            begun[slot, default: []].insert(job.lease)
            return true
        }
    }

    /// Tasks fetched with one that has run for `leaseTTL` seconds, and not begun yet, are handed
    /// back so that idle workers run them instead of their waiting behind it: their leases end, with
    /// their backends forgotten (the slot's own session is the one running the long task), and the
    /// scheduler enqueues them again (`reenqueueExpired`). The slot skips them; when nobody took one
    /// by the time it is free, it starts it again itself. Tasks that began in the round's
    /// transaction stay: they commit or roll back with it.
    private func handBackBehindLongTasks(store: MetadataStore) {
        let now = monotonicSeconds()
        let (slots, leases) = lock.withLock { () -> ([Int], [MetadataStore.Lease]) in
            var slots: [Int] = []
            var leases: [MetadataStore.Lease] = []
            for (slot, r) in runningLease where now - r.since >= leaseTTL {
                let behind = (held[slot] ?? []).subtracting(begun[slot] ?? []).subtracting([r.lease])
                guard !behind.isEmpty else { continue }
                held[slot]?.subtract(behind)
                handedBack[slot, default: []].formUnion(behind)
                handBackInFlight.insert(slot)
                slots.append(slot)
                leases += behind
            }
            return (slots, leases)
        }
        guard !leases.isEmpty else { return }
        defer { lock.withLock { handBackInFlight.subtract(slots) } }
        do {
            try store.expireLeases(leases, forgetBackends: true)
            logger.info(
                "handed back \(leases.count) task(s) waiting behind a task running for over \(leaseTTL) s",
                metadata: ["worker": "\(id)"])
        } catch {
            // Still ours: renewed again, and run here once the long task ends.
            logger.warning(
                "could not hand back tasks waiting behind a long one: \(error)", metadata: ["worker": "\(id)"])
            lock.withLock {
                for slot in slots {
                    let mine = handedBack[slot] ?? []
                    held[slot, default: []].formUnion(mine.intersection(leases))
                    handedBack[slot]?.subtract(leases)
                }
            }
        }
    }

    private func release(_ slot: Int, _ leases: [MetadataStore.Lease]) {
        lock.withLock {
            held[slot]?.subtract(leases)
            lostLeases.subtract(leases)
        }
    }

    func isLost(_ lease: MetadataStore.Lease) -> Bool { lock.withLock { lostLeases.contains(lease) } }

    /// How a worker's run ended.
    public enum Outcome: Sendable {
        /// Every running task finished within the grace period.
        case stopped
        /// The grace period ran out: the worker marked itself dead so that others take its tasks
        /// at once; its slot threads may still sit in C calls (the process should end now).
        case handedBack
    }

    /// Runs until `stop` is set, then gives running tasks `ETL_WORKER_GRACE` seconds.
    public func runBlocking() throws -> Outcome {
        let codec = try MessageCodec(environment: env)
        let keys = RedisKeys(environment: env)
        let setup = TaskQueue(redis: try openRedis(), keys: keys)
        try setup.ensureGroups(queues: queues)
        let pg = try opening("Postgres", timeout: pgConfig.reconnectTimeout) {
            try PostgresConnection(config: pgConfig)
        }
        try Migrator.run(pg, schema: schema, setup: registry.setup)
        pg.close()
        logger.info(
            "worker started",
            metadata: [
                "worker": "\(id)", "queues": "\(queues.joined(separator: ","))", "concurrency": "\(concurrency)",
            ])

        // The heartbeat has a connection of its own: connections are not shared between threads.
        let beatQueue = UncheckedBox(TaskQueue(redis: try openRedis(), keys: keys))
        let beating = DispatchSemaphore(value: 0)
        let heartbeat = Thread { [self] in
            heartbeatLoop(queue: beatQueue.value)
            beating.signal()
        }
        heartbeat.start()
        var renewerConfig = slotConfig
        renewerConfig.reconnectTimeout = min(2, pgConfig.reconnectTimeout)
        // A renewal waiting on a row lock gives up well before the lease runs out, to try again.
        renewerConfig.sessionLimits = [
            ("lock_timeout", "\(Int(leaseTTL * 250))"), ("statement_timeout", "\(Int(leaseTTL * 500))"),
        ]
        renewerConfig.applicationName = "\(pgConfig.applicationName) lease renewer"
        let renewerPG = UncheckedBox(
            try opening("Postgres", timeout: pgConfig.reconnectTimeout) {
                try PostgresConnection(config: renewerConfig)
            })
        let renewing = DispatchSemaphore(value: 0)
        let renewer = Thread { [self] in
            renewLoop(store: MetadataStore(pg: renewerPG.value, schema: schema))
            renewing.signal()
        }
        renewer.start()
        let flusher = Thread { [self] in flushLoop() }
        flusher.start()
        var threads: [Thread] = []
        let done = DispatchGroup()
        for slot in 0..<concurrency {
            done.enter()
            let t = Thread { [self] in
                defer { done.leave() }
                do { try slotLoop(slot: slot, codec: codec, keys: keys) } catch {
                    logger.error("slot stopped: \(error)", metadata: ["slot": "\(slot)"])
                }
            }
            t.stackSize = 8 << 20
            threads.append(t)
            t.start()
        }
        // Wait for a stop request, then give running tasks the grace period.
        while !stop.isSet && done.wait(timeout: .now() + 0.2) == .timedOut {}
        if stop.isSet {
            logger.info(
                "stopping: no new tasks; waiting up to \(grace) s for running ones", metadata: ["worker": "\(id)"])
            if done.wait(timeout: .now() + grace) == .timedOut {
                // Hand back: our pending messages become claimable at once by marking us dead.
                logger.warning("grace period over; handing running tasks back", metadata: ["worker": "\(id)"])
                // The heartbeat stops first: one beat after the mark would make this worker look
                // alive again, and its tasks would wait for the dead-after time instead.
                lock.withLock { handingBack = true }
                _ = beating.wait(timeout: .now() + 3)
                _ = renewing.wait(timeout: .now() + 3)
                // Its leases end now too, so the workers that take the messages take the attempts
                // over at once instead of after the lease's time.
                let leases = lock.withLock { allHeld }
                if let pg = try? PostgresConnection(config: pgConfig) {
                    _ = try? MetadataStore(pg: pg, schema: schema).expireLeases(Array(leases))
                    pg.close()
                }
                _ = try? setup.markDead(id)
                return .handedBack
            }
        }
        try? setup.forgetWorker(id)
        logger.info("worker stopped", metadata: ["worker": "\(id)"])
        return .stopped
    }

    private func heartbeatLoop(queue: TaskQueue) {
        while (!stop.isSet || runningCount > 0) && !lock.withLock({ handingBack }) {
            let info = lock.withLock { () -> String in
                let tasks = current.values.sorted()
                let obj: [String: Any] = [
                    "pid": Int(getpid()), "queues": queues, "concurrency": concurrency, "tasks": tasks,
                    "stopping": stop.isSet,
                ]
                return String(
                    decoding: (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data(),
                    as: UTF8.self)
            }
            do { try queue.heartbeat(worker: id, info: info) } catch {
                logger.warning("heartbeat failed: \(error)")
            }
            sleepSeconds(min(1, deadAfter / 4))
        }
    }

    private var runningCount: Int { lock.withLock { running } }

    /// Renews the leases of the attempts the slots hold, every quarter of `ETL_LEASE_TTL`, from a
    /// thread of its own (a slot inside one long statement or COPY cannot renew for itself).
    /// Progress, for a lease, is this: the process runs and reaches Postgres. A frozen process, a
    /// host cut off or gone, stop renewing, and the lease expires on Postgres's clock; a lease
    /// found gone (taken over, or its attempt ended by the scheduler or an operator) is marked
    /// lost, and its task stops at its next check (`TaskContext.checkDeadline`) or its next
    /// statement fails (its backends were ended).
    private func renewLoop(store: MetadataStore) {
        var failing = false
        while (!stop.isSet || runningCount > 0) && !lock.withLock({ handingBack }) {
            handBackBehindLongTasks(store: store)
            let leases = lock.withLock { allHeld }
            do {
                let r = try store.renewLeases(Array(leases), ttl: leaseTTL)
                clock.set(r.now)
                interruptCancelled(store: store, r.cancel)
                let gone = leases.subtracting(r.renewed)
                // A lease may have ended between the read and the renewal (its task finished): only
                // those still held count as lost.
                lock.withLock {
                    let still = allHeld
                    let lost = gone.intersection(still).subtracting(lostLeases)
                    for l in lost {
                        let what = "\(l.key.task) of run \(l.key.run) try \(l.key.tryNumber) (epoch \(l.epoch))"
                        logger.warning(
                            "lease lost: \(what) is no longer this worker's; its task stops",
                            metadata: ["worker": "\(id)"])
                    }
                    lostLeases.formUnion(lost)
                }
                if failing { logger.info("lease renewals go through again", metadata: ["worker": "\(id)"]) }
                failing = false
            } catch {
                if !failing { logger.warning("lease renewal failed: \(error)", metadata: ["worker": "\(id)"]) }
                failing = true
            }
            sleepSeconds(leaseTTL / 4)
        }
    }

    /// Reclaiming is checked by idle slots, at most every `reclaimEvery` seconds, and at once
    /// after a slot took something (the dead worker may have left more for the other idle slots).
    private var lastReclaimCheck = 0.0
    private var reclaimMore = false
    private var reclaimEvery: Double { min(1, deadAfter / 2) }

    private func reclaimDue() -> Bool {
        lock.withLock {
            let now = monotonicSeconds()
            guard reclaimMore || now - lastReclaimCheck > reclaimEvery else { return false }
            lastReclaimCheck = now
            reclaimMore = false
            return true
        }
    }

    /// Opens a connection the worker needs to start (or a slot to run), waiting for a server that
    /// is down for now as a lost connection is waited for later (ETL_REDIS_RECONNECT_TIMEOUT,
    /// ETL_PG_RECONNECT_TIMEOUT): a worker started while Redis or Postgres restarts stopped at once,
    /// and a slot that started then stopped with it (Celery retries its broker at start-up too).
    private func opening<T>(_ server: String, timeout: Double, _ open: () throws -> T) throws -> T {
        try Backoff(base: 0.05, cap: 2, jitter: 0.3).retry(
            timeout: timeout, server: server, endpoint: server, logger: logger,
            isRetryable: { e in
                (e as? RedisError)?.code == .connectionFailed || (e as? PostgresError)?.code == .connectionFailed
            }, open)
    }

    private func openRedis() throws -> RedisConnection {
        let config = try RedisConfig(environment: env)
        return try opening("Redis", timeout: config.reconnectTimeout) { try RedisConnection(config: config) }
    }

    private func slotLoop(slot: Int, codec: MessageCodec, keys: RedisKeys) throws {
        let consumer = "\(id)/\(slot)"
        let queue = TaskQueue(redis: try openRedis(), keys: keys)
        let pg = try opening("Postgres", timeout: pgConfig.reconnectTimeout) {
            try PostgresConnection(config: slotConfig)
        }
        // A start may commit without waiting for its WAL flush: if Postgres loses it in a crash,
        // the session breaks with it, the batch never finishes and its messages run again. The
        // batch transaction (the tasks' writes and their ends) commits durably: see below.
        try pg.query("SET synchronous_commit = off")
        let store = MetadataStore(pg: pg, schema: schema)
        var limit = prefetch
        // Messages whose attempt another runner's lease holds, and since when this slot has seen them.
        var heldSince: [String: Double] = [:]
        while !stop.isSet {
            do {
                // A slot waiting for a lease to expire leaves further reclaims to the idle slots.
                if heldSince.isEmpty && reclaimDue() {
                    // One message per idle slot: a dead worker's tasks run side by side on the
                    // live slots instead of one after another on the first slot to look. A reclaim
                    // that fails is logged and tried at the next check: the slot still fetches.
                    let n: Int
                    do {
                        n = try queue.reclaim(queues: queues, deadAfter: deadAfter, consumer: consumer, limit: 1)
                    } catch let e as RedisError where e.isConnectionProblem {
                        throw e
                    } catch {
                        logger.warning("reclaim failed: \(error)", metadata: ["worker": "\(id)", "slot": "\(slot)"])
                        n = 0
                    }
                    if n > 0 {
                        lock.withLock { reclaimMore = true }
                        logger.warning(
                            "reclaimed \(n) task(s) from dead workers",
                            metadata: ["worker": "\(id)", "slot": "\(slot)"])
                    }
                }
                let batch = try queue.fetch(queues: queues, consumer: consumer, block: 1, count: limit)
                if batch.isEmpty { continue }
                lock.withLock { running += 1 }
                defer {
                    lock.withLock {
                        running -= 1
                        current[slot] = nil
                    }
                }
                let (slow, waiting) = try handle(
                    batch, slot: slot, codec: codec, queue: queue, store: store, heldSince: &heldSince)
                if waiting {
                    queue.mayOwnPending = true
                    sleepSeconds(0.5)
                }
                // After a task that ran past the batch window, take one message at a time until
                // tasks are quick again: quick tasks never wait long behind a slow one.
                limit = BatchRound.prefetch(after: slow, configured: prefetch)
            } catch let e as RedisError where e.isConnectionProblem {
                queue.mayOwnPending = true  // a delivery may have been made whose reply we lost
                logger.warning("Redis: \(e); retrying")
                sleepSeconds(0.5)
            } catch let e as PostgresError where e.isConnectionProblem {
                queue.mayOwnPending = true  // the batch's messages are still ours: run them again
                logger.warning("Postgres: \(e); retrying")
                sleepSeconds(0.5)
            } catch let e as PostgresError where e.isLockTimeout {
                // A lock held elsewhere for longer than ETL_PG_LOCK_TIMEOUT: not the task's failure.
                // Its committed work stays; the batch runs again under the same lease.
                queue.mayOwnPending = true
                logger.info("slot \(slot): waited too long for a lock (\(e.firstLine)); trying again in 1 s")
                sleepSeconds(1)
            } catch {
                // Anything else (a statement refused, Redis out of memory): the slot lives on and
                // its messages, still pending under it, are read again, instead of being stranded
                // under a consumer whose worker still heartbeats.
                queue.mayOwnPending = true
                logger.error("slot \(slot): \(error); its messages will be tried again in 2 s")
                sleepSeconds(2)
            }
        }
    }

    /// A verified message and what it runs.
    private struct Job {
        let delivery: TaskQueue.Delivery
        let message: TaskMessage
        let spec: TaskSpec
        let op: TaskOperation
        /// The lease epoch this runner holds the attempt under, once started.
        var epoch: Int64 = 0
        var lease: MetadataStore.Lease { .init(key: key, epoch: epoch) }
        var key: MetadataStore.AttemptKey {
            .init(run: message.runID, task: message.task, tryNumber: message.tryNumber)
        }
        var label: String { "\(message.dag).\(message.task) run \(message.runID) try \(message.tryNumber)" }
    }

    /// A task that ran: how its attempt ended, and whether it wrote through the attempt's connection.
    private struct Ran {
        let job: Job
        let end: MetadataStore.AttemptEnd
        let wrote: Bool
        /// What the task left to do once its transaction committed (`TaskContext.afterCommit`).
        var afterCommit: [(PostgresConnection) throws -> Void] = []
    }

    /// Runs the messages of one fetch. Returns whether some task ran past the batch window.
    ///
    /// The batch's attempts start in one statement; its tasks then run one after another in one
    /// transaction, each in a savepoint opened when it first uses the database (a failing task's
    /// writes are rolled back alone); their ends are recorded in one statement and committed
    /// together; one Lua call acknowledges the messages and publishes their completion events.
    /// When the batch has run for `BatchRound.window` seconds (or the next task has a timeout) the done
    /// part is committed and acknowledged, and the rest starts again as a new round.
    ///
    /// Returns too whether messages were kept back because another runner's lease holds their
    /// attempt: a copy delivered while its first runner may be dead (a reclaim) is kept until the
    /// lease can have expired (`ETL_LEASE_TTL` + 2 s), and then taken over, or acknowledged away
    /// when the lease is still held (its runner lives: a duplicate).
    private func handle(
        _ batch: [TaskQueue.Delivery], slot: Int, codec: MessageCodec, queue: TaskQueue, store: MetadataStore,
        heldSince: inout [String: Double]
    ) throws -> (slow: Bool, waiting: Bool) {
        // A slot handles one batch at a time: what it held before (a batch cut short by a lost
        // connection) is started again below or belongs to another runner now.
        lock.withLock {
            if let before = held[slot] { lostLeases.subtract(before) }
            held[slot] = nil
        }
        // Nor does it hold anything once the batch is over, however it ended: what it did not
        // finish comes back to it (pending under it) or to another runner (reclaimed).
        defer {
            lock.withLock {
                if let left = held[slot] { lostLeases.subtract(left) }
                held[slot] = nil
            }
        }
        var jobs: [Job] = []
        for d in batch {
            let message: TaskMessage
            do {
                message = try codec.decode(body: d.body, signature: d.signature)
            } catch {
                logger.error("dead-lettered message \(d.entryID) from queue \(d.queue): \(error)")
                try queue.deadLetter(d, reason: error.description)
                continue
            }
            guard let dag = registry.dag(message.dag), let spec = dag.task(message.task),
                let op = registry.operations[spec.operation]
            else {
                let reason = MessageRejection.unknownTask(dag: message.dag, task: message.task)
                logger.error("dead-lettered message \(d.entryID): \(reason)")
                try queue.deadLetter(d, reason: reason.description)
                continue
            }
            jobs.append(Job(delivery: d, message: message, spec: spec, op: op))
        }
        var slow = false
        var waiting = false
        var rest = jobs[...]
        var round = BatchRound()
        while !rest.isEmpty {
            var acks: [(delivery: TaskQueue.Delivery, event: CompletionEvent?)] = []
            // A hand-back under way must land before these attempts start again, not after.
            while lock.withLock({ handBackInFlight.contains(slot) }) { usleep(5_000) }
            let session = store.pg.backendPID
            lock.withLock { slotSessions[slot] = session }
            let outcomes = try store.startAttempts(
                rest.map(\.key), worker: "\(id)/\(slot)", runner: runner(slot), ttl: leaseTTL, limit: maxDeliveries)
            var toRun: [Job] = []
            var exhausted: [(job: Job, end: MetadataStore.AttemptEnd)] = []
            for (i, outcome) in outcomes.enumerated() {
                var job = rest[rest.startIndex + i]
                switch outcome {
                case .started(let epoch):
                    heldSince[job.delivery.entryID] = nil
                    job.epoch = epoch
                    toRun.append(job)
                case .notCurrent:
                    // Finished already, or superseded by a newer try: acknowledge without running.
                    logger.info("skipping \(job.label): attempt already finished or superseded")
                    acks.append((job.delivery, nil))
                case .heldElsewhere:
                    let since = heldSince[job.delivery.entryID] ?? monotonicSeconds()
                    if monotonicSeconds() - since < leaseTTL + 2 {
                        heldSince[job.delivery.entryID] = since
                        waiting = true  // kept pending: looked at again in a moment
                    } else {
                        // A duplicate delivery: the live runner holding the lease ends it.
                        heldSince[job.delivery.entryID] = nil
                        logger.info("skipping \(job.label): another live runner holds its lease")
                        acks.append((job.delivery, nil))
                    }
                case .exhausted(let epoch, let deliveries):
                    job.epoch = epoch
                    let reason = MessageRejection.tooManyDeliveries(deliveries)
                    logger.error("dead-lettered message \(job.delivery.entryID) (\(job.label)): \(reason)")
                    try queue.deadLetter(job.delivery, reason: reason.description)
                    exhausted.append(
                        (job, failedEnd(job, error: reason, log: "--- \(reason) ---\n")))
                }
            }
            hold(slot, toRun.map(\.lease))
            if !exhausted.isEmpty {
                let current = try store.finishAttempts(exhausted.map(\.end))
                // Their messages are dead letters already: only the completion events remain.
                try queue.complete(
                    [],
                    events: exhausted.enumerated().compactMap { i, e in
                        current.contains(i) ? event(e.job, state: e.end.state) : nil
                    })
            }
            var ranCount = 0
            let chunk = Array(toRun.prefix(round.offer(toRun.count)))
            do {
                let (ran, wasSlow) = try runInTransaction(chunk, slot: slot, store: store)
                slow = slow || wasSlow
                ranCount = ran.count
                acks += ran.map { r in (r.job.delivery, r.event) }
            } catch {
                // A superseded writer rolled the round back, or the transaction itself failed (its
                // COMMIT refused by a deferred constraint, a statement cancelled): one task per
                // transaction finds whose it is, and a lone task's attempt fails outside any
                // transaction, as a task's own error would. A lost connection, a lock wait that
                // timed out, go to the slot (tried again, not the task's failure); a lost lease
                // ends the round's held attempts here (their new runner ends them).
                if let lost = error as? MetadataStore.LeaseLost {
                    // That one is another runner's now; the round's others were rolled back with
                    // it and go round again.
                    logger.warning("\(lost)")
                    let (gone, again) = (
                        toRun.filter { $0.key == lost.lease.key }, toRun.filter { $0.key != lost.lease.key }
                    )
                    acks += gone.map { ($0.delivery, nil) }
                    try queue.complete(acks)
                    release(slot, gone.map(\.lease))
                    rest = again[...]
                    continue
                }
                let pgError = error as? PostgresError
                let lost = (pgError?.isConnectionProblem ?? false) || (pgError?.isLockTimeout ?? false)
                switch round.afterFailure(
                    offered: chunk.count, supersededWrites: error is SupersededWrites, connectionLost: lost)
                {
                case .reconnect: throw error
                case .goAlone: break
                case .failTask:
                    guard let job = chunk.first else { break }
                    let end = failedEnd(
                        job, error: error, log: "attempt \(job.message.tryNumber) on \(id)/\(slot) failed: \(error)\n")
                    let current = try store.finishAttempts([end])
                    acks.append((job.delivery, current.isEmpty ? nil : event(job, state: end.state)))
                    ranCount = 1
                }
            }
            try queue.complete(acks)
            release(slot, toRun.prefix(ranCount).map(\.lease))
            // Jobs not run yet (the window closed, or one at a time) go round again.
            rest = toRun.dropFirst(ranCount)
        }
        if heldSince.count > 10_000 { heldSince.removeAll() }
        return (slow, waiting)
    }

    /// Thrown inside the batch transaction when a superseded task had written: rolls it all back.
    private struct SupersededWrites: Error {}

    /// Runs `jobs` in one transaction until they are all done or the batch window has passed.
    /// Returns the jobs done with their completion events (nil for a superseded one), and
    /// whether one of them ran longer than the window.
    private func runInTransaction(
        _ jobs: [Job], slot: Int, store: MetadataStore
    ) throws -> (ran: [(job: Job, event: CompletionEvent?)], slow: Bool) {
        guard !jobs.isEmpty else { return ([], false) }
        let batchStart = monotonicSeconds()
        var slow = false
        var hooks: [(job: Job, body: (PostgresConnection) throws -> Void)] = []
        let done: [(job: Job, event: CompletionEvent?)]
        do {
            done = try store.pg.transaction { tx -> [(job: Job, event: CompletionEvent?)] in
                // Durable before the messages are acknowledged (a session reconnected after a
                // failure is back to the server's default, which is durable too).
                try tx.query("SET LOCAL synchronous_commit = on")
                var ran: [Ran] = []
                for job in jobs {
                    // A task with a timeout only runs alone in a round: it is the one whose start time
                    // the round's start statement records, so the scheduler times it from its real start
                    // (the others' start is recorded when they end; they cannot time out while waiting).
                    guard
                        BatchRound.runsNext(
                            ranSoFar: ran.count, elapsed: monotonicSeconds() - batchStart,
                            nextHasTimeout: job.spec.timeout > 0)
                    else { break }
                    // Handed back while it waited behind a long task: left to whoever takes it.
                    guard beginRunning(job, slot: slot) else { break }
                    defer { lock.withLock { runningLease[slot] = nil } }
                    let taskStart = monotonicSeconds()
                    ran.append(try run(job, slot: slot, tx: tx))
                    if BatchRound.isSlow(taskSeconds: monotonicSeconds() - taskStart) { slow = true }
                    // Its end is recorded now, not after the tasks behind it: the scheduler times
                    // it until its end is committed.
                    if job.spec.timeout > 0 { break }
                }
                let current = try store.finishAttempts(ran.map(\.end), on: tx)
                var out: [(job: Job, event: CompletionEvent?)] = []
                for (i, r) in ran.enumerated() {
                    switch BatchRound.verdict(
                        current: current.contains(i), wrote: r.wrote, succeeded: r.end.state == .success,
                        roundSize: ran.count)
                    {
                    case .acknowledge(event: true):
                        out.append((r.job, event(r.job, state: r.end.state)))
                        if r.end.state == .success { hooks += r.afterCommit.map { (r.job, $0) } }
                    case .acknowledge(event: false):
                        logger.warning("\(r.job.label) was superseded (timed out or cleared) while running")
                        out.append((r.job, nil))
                    case .rollBackRound: throw SupersededWrites()
                    case .rollBackTask: throw Superseded(job: r.job)
                    }
                }
                return out
            }
        } catch let e as Superseded {
            logger.warning(
                "\(e.job.label) was superseded (timed out or cleared) while running; its writes were rolled back")
            return ([(e.job, nil)], slow)
        }
        // Ended and committed: the renewer lets them go before the hooks run (they may take a while).
        release(slot, done.map(\.job.lease))
        // Committed: now what had to wait for it. A failure there cannot undo the commit: it is
        // logged, and written to the attempt's log.
        for h in hooks {
            do { try h.body(store.pg) } catch {
                logger.error("\(h.job.label): after its commit: \(error)")
                _ = try? store.pg.query(
                    """
                    UPDATE \(store.schema).task_attempt SET log = log || $4
                    WHERE run_id = $1 AND task_id = $2 AND try_number = $3
                    """,
                    [
                        h.job.message.runID, h.job.message.task, h.job.message.tryNumber,
                        "--- after its commit, failed: \(error) ---\n",
                    ])
            }
        }
        return (done, slow)
    }

    /// Runs one task inside the batch transaction, in a savepoint when it touches the database.
    private func run(_ job: Job, slot: Int, tx: PostgresConnection) throws -> Ran {
        let message = job.message
        lock.withLock { current[slot] = job.label }
        let deadline = job.spec.timeout > 0 ? monotonicSeconds() + job.spec.timeout : nil
        let lease = job.lease
        guard !isLost(lease) else { throw MetadataStore.LeaseLost(lease: lease) }
        let config = pgConfig
        let schema = schema
        let ctx = TaskContext(
            message: message, pg: tx, schema: schema, deadline: deadline,
            firstUse: { pg in try pg.query("SAVEPOINT etl_task") },
            connect: {
                // Registered under the lease on every connect and reconnect: a take-over ends it,
                // and once the lease is gone it cannot connect again.
                try PostgresConnection(config: config) { c in
                    try MetadataStore(pg: c, schema: schema).registerBackend(lease, on: c)
                }
            },
            leaseLost: { [weak self] in self?.isLost(lease) ?? false },
            cancelled: { [weak self] in self?.cancelRequest(lease) })
        ctx.log("attempt \(message.tryNumber) of \(message.dag).\(message.task) on \(id)/\(slot)")
        // Its log reaches Postgres while it runs (the flusher), until it ends.
        lock.withLock { liveLogs[slot] = (ctx, job.key, "\(id)/\(slot)") }
        defer { lock.withLock { liveLogs[slot] = nil } }
        let startedAt = Date()
        // Asked to stop before it began (it waited in the batch, or was started again).
        if let by = cancelRequest(lease) { return cancelledEnd(job, by: by, ctx: ctx, startedAt: startedAt) }
        var failure: Error?
        do {
            let pid = tx.backendPID
            lock.withLock { interruptible[slot] = (lease, pid) }
            defer { slotGates[slot].withLock { lock.withLock { interruptible[slot] = nil } } }
            try job.op(ctx)
        } catch {
            failure = error
        }
        do {
            if let by = cancelRequest(lease), failure != nil {
                // Whatever the interruption made it throw: a cancelled statement, a check.
                if ctx.usedDatabase {
                    try tx.query("ROLLBACK TO SAVEPOINT etl_task")
                    try tx.query("RELEASE SAVEPOINT etl_task")
                }
                ctx.log("stopped: \(failure.map { "\($0)" } ?? "")")
                return cancelledEnd(job, by: by, ctx: ctx, startedAt: startedAt)
            }
            if failure == nil, ctx.usedDatabase {
                // Fails when the task left the transaction aborted (an error it swallowed).
                try tx.query("RELEASE SAVEPOINT etl_task")
            }
        } catch {
            failure = error
        }
        switch failure {
        case let e as PostgresError where e.isConnectionProblem || e.isLockTimeout:
            throw e  // not the task's fault: the messages stay pending and run again
        case let e as MetadataStore.LeaseLost:
            throw e  // another runner has the attempt now
        case is TaskContext.LeaseGone:
            throw MetadataStore.LeaseLost(lease: lease)
        case .some:
            if ctx.usedDatabase {
                try tx.query("ROLLBACK TO SAVEPOINT etl_task")
                try tx.query("RELEASE SAVEPOINT etl_task")
            }
        case nil: break
        }
        guard let failure else {
            ctx.log("succeeded")
            return Ran(
                job: job,
                end: .init(
                    key: job.key, state: .success, error: nil, retryAt: nil, log: ctx.closeLog(),
                    startedAt: startedAt, epoch: job.epoch),
                wrote: ctx.usedDatabase, afterCommit: ctx.committed)
        }
        ctx.log("failed: \(failure)")
        return Ran(
            job: job, end: failedEnd(job, error: failure, log: ctx.closeLog(), startedAt: startedAt),
            wrote: false)
    }

    /// How a cancelled attempt ends: `cancelled`, not retried (what it had not committed was rolled back).
    private func cancelledEnd(_ job: Job, by: String, ctx: TaskContext, startedAt: Date) -> Ran {
        logger.warning("\(job.label) cancelled by \(by)", metadata: ["worker": "\(id)"])
        ctx.log("cancelled by \(by); what it had not committed was rolled back")
        return Ran(
            job: job,
            end: .init(
                key: job.key, state: .cancelled, error: "cancelled by \(by)", retryAt: nil, log: ctx.closeLog(),
                startedAt: startedAt, epoch: job.epoch),
            wrote: false)
    }

    /// How a failed attempt ends: up for retry after its backoff while tries remain, else failed.
    private func failedEnd(
        _ job: Job, error: Error, log: String, startedAt: Date? = nil
    ) -> MetadataStore.AttemptEnd {
        // The retry time is on Postgres's clock, where the scheduler judges it.
        let end = job.spec.afterFailure(tryNumber: job.message.tryNumber, now: clock.now())
        logger.warning("\(job.label) failed: \(error)", metadata: ["next": "\(end.state.rawValue)"])
        return .init(
            key: job.key, state: end.state, error: "\(error)", retryAt: end.retryAt, log: log, startedAt: startedAt,
            epoch: job.epoch)
    }

    private func event(_ job: Job, state: TaskState) -> CompletionEvent {
        CompletionEvent(
            dag: job.message.dag, runID: job.message.runID, task: job.message.task, tryNumber: job.message.tryNumber,
            state: state.rawValue, worker: id)
    }

    /// A lone task was superseded after writing: its transaction is rolled back, its message acknowledged.
    private struct Superseded: Error {
        let job: Job
    }
}
