import Foundation
import Logging
import Shared
import Tasks


/// One worker process: `concurrency` slots, each a thread with its own Redis and Postgres
/// connections, plus a heartbeat thread.
///
/// A message travels: fetch (stays pending in Redis) → verify signature → look up the task →
/// `startAttempt` (skips finished or superseded attempts) → run the operation and record success
/// in one Postgres transaction → `complete` (ack + delete + completion event, atomically).
final class WorkerService: @unchecked Sendable {
    let id: String
    let env: Environment
    let registry: Registry
    let queues: [String]
    let concurrency: Int
    let deadAfter: Double
    let grace: Double
    let schema: String
    let logger: Logger
    private let lock = NSLock()
    private var current: [Int: String] = [:]
    private var running = 0

    init(env: Environment, registry: Registry, queues: [String], concurrency: Int, logger: Logger) throws {
        self.env = env
        self.registry = registry
        self.queues = queues
        self.concurrency = concurrency
        self.logger = logger
        let host = ProcessInfo.processInfo.hostName
        id = env["ETL_WORKER_NAME"] ?? "\(host)-\(getpid())"
        deadAfter = try env.seconds("ETL_WORKER_DEAD_AFTER", default: 5, range: 1...3600)
        grace = try env.seconds("ETL_WORKER_GRACE", default: 30, range: 0...86_400)
        schema = env["ETL_SCHEMA"] ?? "etl"
    }

    func run() throws {
        let codec = try MessageCodec(environment: env)
        let keys = RedisKeys(environment: env)
        let setup = TaskQueue(redis: try RedisConnection(config: RedisConfig(environment: env)), keys: keys)
        try setup.ensureGroups(queues: queues)
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        try Migrator.run(pg, schema: schema, setup: registry.setup)
        pg.close()
        logger.info("worker started", metadata: ["worker": "\(id)", "queues": "\(queues.joined(separator: ","))", "concurrency": "\(concurrency)"])

        // The heartbeat has a connection of its own: connections are not shared between threads.
        let beatQueue = UncheckedBox(TaskQueue(redis: try RedisConnection(config: RedisConfig(environment: env)), keys: keys))
        let heartbeat = Thread { [self] in heartbeatLoop(queue: beatQueue.value) }
        heartbeat.start()
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
        while stopRequested == 0 && done.wait(timeout: .now() + 0.2) == .timedOut {}
        if stopRequested != 0 {
            logger.info("stopping: no new tasks; waiting up to \(grace) s for running ones", metadata: ["worker": "\(id)"])
            if done.wait(timeout: .now() + grace) == .timedOut {
                // Hand back: our pending messages become claimable at once by marking us dead.
                logger.warning("grace period over; handing running tasks back", metadata: ["worker": "\(id)"])
                _ = try? setup.redis.command("ZADD", keys.heartbeats, 0, id)
                exit(3)
            }
        }
        try? setup.forgetWorker(id)
        logger.info("worker stopped", metadata: ["worker": "\(id)"])
    }

    private func heartbeatLoop(queue: TaskQueue) {
        while stopRequested == 0 || runningCount > 0 {
            let info = lock.withLock { () -> String in
                let tasks = current.values.sorted()
                let obj: [String: Any] = ["pid": Int(getpid()), "queues": queues, "concurrency": concurrency, "tasks": tasks,
                                          "stopping": stopRequested != 0]
                return String(decoding: (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
            }
            do { try queue.heartbeat(worker: id, info: info) } catch {
                logger.warning("heartbeat failed: \(error)")
            }
            sleepSeconds(min(1, deadAfter / 4))
        }
    }

    private var runningCount: Int { lock.withLock { running } }

    private func slotLoop(slot: Int, codec: MessageCodec, keys: RedisKeys) throws {
        let consumer = "\(id)/\(slot)"
        let queue = TaskQueue(redis: try RedisConnection(config: RedisConfig(environment: env)), keys: keys)
        let pg = try PostgresConnection(config: PostgresConfig(environment: env))
        let store = MetadataStore(pg: pg, schema: schema)
        var lastReclaim = 0.0
        while stopRequested == 0 {
            do {
                if slot == 0 && monotonicSeconds() - lastReclaim > min(1, deadAfter / 2) {
                    lastReclaim = monotonicSeconds()
                    let n = try queue.reclaim(queues: queues, deadAfter: deadAfter, consumer: consumer)
                    if n > 0 { logger.warning("reclaimed \(n) task(s) from dead workers", metadata: ["worker": "\(id)"]) }
                }
                guard let d = try queue.fetch(queues: queues, consumer: consumer, block: 1) else { continue }
                lock.withLock { running += 1 }
                defer { lock.withLock { running -= 1; current[slot] = nil } }
                try handle(d, slot: slot, codec: codec, queue: queue, store: store)
            } catch let e as RedisError where e.isConnectionProblem {
                queue.mayOwnPending = true  // a delivery may have been made whose reply we lost
                logger.warning("Redis: \(e); retrying")
                sleepSeconds(0.5)
            } catch let e as PostgresError where e.isConnectionProblem {
                logger.warning("Postgres: \(e); retrying")
                sleepSeconds(0.5)
            }
        }
    }

    private func handle(_ d: TaskQueue.Delivery, slot: Int, codec: MessageCodec, queue: TaskQueue, store: MetadataStore) throws {
        let message: TaskMessage
        do {
            message = try codec.decode(body: d.body, signature: d.signature)
        } catch {
            logger.error("dead-lettered message \(d.entryID) from queue \(d.queue): \(error)")
            try queue.deadLetter(d, reason: error.description)
            return
        }
        guard let dag = registry.dag(message.dag), let spec = dag.task(message.task), let op = registry.operations[spec.operation] else {
            let reason = MessageRejection.unknownTask(dag: message.dag, task: message.task)
            logger.error("dead-lettered message \(d.entryID): \(reason)")
            try queue.deadLetter(d, reason: reason.description)
            return
        }
        let label = "\(message.dag).\(message.task) run \(message.runID) try \(message.tryNumber)"
        guard try store.startAttempt(run: message.runID, task: message.task, tryNumber: message.tryNumber, worker: "\(id)/\(slot)") else {
            // Finished already, or superseded by a newer try: acknowledge without running.
            logger.info("skipping \(label): attempt already finished or superseded")
            try queue.complete(d, event: nil)
            return
        }
        lock.withLock { current[slot] = label }
        let deadline = spec.timeout > 0 ? monotonicSeconds() + spec.timeout : nil
        let ctx = TaskContext(message: message, pg: store.pg, schema: schema, deadline: deadline)
        ctx.log("attempt \(message.tryNumber) of \(message.dag).\(message.task) on \(id)/\(slot)")
        var outcome = TaskState.success
        do {
            // The task's writes and its success commit together, or not at all.
            try store.pg.transaction { tx in
                try op(ctx)
                ctx.log("succeeded")
                guard try store.finishAttempt(run: message.runID, task: message.task, tryNumber: message.tryNumber,
                                              state: .success, error: nil, retryAt: nil, log: ctx.logText, on: tx) else {
                    throw Superseded()
                }
            }
        } catch is Superseded {
            logger.warning("\(label) was superseded (timed out or cleared) while running; its writes were rolled back")
            try queue.complete(d, event: nil)
            return
        } catch let e as PostgresError where e.isConnectionProblem {
            throw e  // not the task's fault: leave the message pending; it is retried
        } catch {
            let retry = message.tryNumber <= spec.retries
            outcome = retry ? .upForRetry : .failed
            let retryAt = retry ? Date().addingTimeInterval(spec.retryBackoff.delay(attempt: message.tryNumber - 1)) : nil
            ctx.log("failed: \(error)")
            try store.finishAttempt(run: message.runID, task: message.task, tryNumber: message.tryNumber, state: outcome,
                                    error: "\(error)", retryAt: retryAt, log: ctx.logText)
            logger.warning("\(label) failed: \(error)", metadata: ["next": "\(outcome.rawValue)"])
        }
        try queue.complete(d, event: CompletionEvent(dag: message.dag, runID: message.runID, task: message.task,
                                                      tryNumber: message.tryNumber, state: outcome.rawValue, worker: id))
    }

    struct Superseded: Error {}
}

/// Hands a non-Sendable value to exactly one other thread.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
