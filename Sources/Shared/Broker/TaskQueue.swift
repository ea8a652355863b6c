import ETLSupport
import Foundation
import RedisClient
import Workflow

/// The broker side of the task queue, on Redis Streams with consumer groups.
///
/// 1. `enqueue` adds a signed message to the stream of its queue (`<prefix>q:<queue>`).
/// 2. `fetch` reads waiting messages for a consumer (`XREADGROUP`, up to a count): they stay
///    pending, owned by that consumer, until acknowledged, so a worker that dies loses nothing.
/// 3. `complete` acknowledges them, deletes them and publishes the completion events in one Lua call.
/// 4. `deadLetter` moves a message that cannot run to `<prefix>dead` with its reason, atomically.
/// 5. `reclaim` takes over the pending messages of consumers whose worker stopped heartbeating.
///
/// All keys live under one prefix (`ETL_REDIS_PREFIX`, default `etl:`).
public final class TaskQueue {
    public let redis: RedisConnection
    public let keys: RedisKeys
    public static let workerGroup = "workers"
    public static let schedulerGroup = "scheduler"

    public init(redis: RedisConnection, keys: RedisKeys) {
        self.redis = redis
        self.keys = keys
    }

    /// A message handed to a consumer.
    public struct Delivery: Sendable {
        public let queue: String
        public let entryID: String
        public let body: [UInt8]?
        public let signature: String?
    }

    /// Creates the consumer groups of `queues` and of the event stream when missing.
    public func ensureGroups(queues: [String]) throws {
        for stream in queues.map(keys.queue) { try createGroup(stream: stream, group: Self.workerGroup) }
        try createGroup(stream: keys.events, group: Self.schedulerGroup)
    }

    private func createGroup(stream: String, group: String) throws {
        let r = try redis.rawCommand(["XGROUP", "CREATE", stream, group, "0", "MKSTREAM"])
        if let e = r.errorMessage, !e.hasPrefix("BUSYGROUP") { throw RedisError(.server, e, endpoint: redis.endpoint) }
    }

    // MARK: Producing

    /// Adds a signed message to its queue; returns the stream entry id.
    @discardableResult
    public func enqueue(_ message: TaskMessage, codec: MessageCodec) throws -> String {
        let (body, sig) = try codec.encode(message)
        return try enqueueRaw(queue: message.queue, fields: [("body", body), ("sig", Array(sig.utf8))])
    }

    /// Adds already signed messages to their queues in one pipeline (one round trip for many).
    public func enqueue(encoded: [(queue: String, body: [UInt8], signature: String)]) throws {
        guard !encoded.isEmpty else { return }
        let replies = try redis.pipeline { p in
            for e in encoded { p.add("XADD", keys.queue(e.queue), "*", "body", e.body, "sig", e.signature) }
        }
        if let bad = replies.first(where: { $0.errorMessage != nil }) {
            throw RedisError(.server, bad.errorMessage ?? "XADD failed", endpoint: redis.endpoint)
        }
    }

    /// The ids (`TaskMessage.id`) of every message in `queue`'s stream, waiting or handed out,
    /// read a thousand at a time (a deep queue holds many thousands).
    public func messageIDs(inQueue queue: String) throws -> Set<String> {
        var present = Set<String>()
        var from = "-"
        while true {
            let page = try redis.command("XRANGE", keys.queue(queue), from, "+", "COUNT", 1000).array ?? []
            for entry in page {
                guard let fields = entry.array?.last?.array, let body = Self.field("body", in: fields)?.bytes,
                    let id = FlatJSON.parse(body)?["id"]?.string
                else { continue }
                present.insert(id)
            }
            guard page.count == 1000, let last = page.last?.array?.first?.string else { return present }
            from = "(" + last
        }
    }

    /// Adds arbitrary fields to a queue (tests and operators use it to inject messages).
    @discardableResult
    public func enqueueRaw(queue: String, fields: [(String, [UInt8])]) throws -> String {
        var args: [any RedisArgument] = ["XADD", keys.queue(queue), "*"]
        for (k, v) in fields {
            args.append(k)
            args.append(v)
        }
        guard let id = try redis.command(args).string else {
            throw RedisError(.server, "XADD returned no id", endpoint: redis.endpoint)
        }
        return id
    }

    // MARK: Consuming

    /// Waits up to `block` seconds for messages on `queues` and takes up to `count` of each queue's
    /// waiting ones at once (fewer when fewer wait: a lone message is never held back). Messages
    /// this consumer already owns but has not acknowledged come first.
    public func fetch(queues: [String], consumer: String, block: Double, count: Int) throws -> [Delivery] {
        // Owned-but-unacknowledged messages exist only after a start or a reclaim; skip the extra
        // round trip otherwise.
        if mayOwnPending {
            let own = try read(queues: queues, consumer: consumer, id: "0", block: nil, count: count)
            if !own.isEmpty { return own }
            mayOwnPending = false
        }
        return try read(queues: queues, consumer: consumer, id: ">", block: block, count: count)
    }

    /// Set when this consumer may own pending messages or events (at start, after a reclaim or a
    /// reconnect); while false, reads skip the extra round trip for them.
    public var mayOwnPending = true

    private func read(queues: [String], consumer: String, id: String, block: Double?, count: Int) throws -> [Delivery] {
        var args: [any RedisArgument] = ["XREADGROUP", "GROUP", Self.workerGroup, consumer, "COUNT", max(1, count)]
        if let block { args += ["BLOCK", max(1, Int(block * 1000))] }
        args.append("STREAMS")
        for q in queues { args.append(keys.queue(q)) }
        for _ in queues { args.append(id) }
        let reply = try block.map { try redis.blockingCommand(args, blockFor: $0) } ?? redis.command(args)
        var out: [Delivery] = []
        for s in reply.array ?? [] {
            guard let pair = s.array, pair.count == 2, let name = pair[0].string, let entries = pair[1].array else {
                continue
            }
            let queue = keys.queueName(fromStream: name)
            for entry in entries {
                guard let e = entry.array, e.count == 2, let entryID = e[0].string else { continue }
                // A pending entry deleted meanwhile comes back with nil fields: acknowledge it away.
                guard let fields = e[1].array else {
                    try redis.command("XACK", name, Self.workerGroup, entryID)
                    continue
                }
                var body: [UInt8]?
                var sig: String?
                var i = 0
                while i + 1 < fields.count {
                    switch fields[i].string {
                    case "body": body = fields[i + 1].bytes
                    case "sig": sig = fields[i + 1].string
                    default: break
                    }
                    i += 2
                }
                out.append(Delivery(queue: queue, entryID: entryID, body: body, signature: sig))
            }
        }
        return out
    }

    // KEYS: the event stream, then the streams of the messages. ARGV: the group, the number of
    // messages, per message the index of its stream in KEYS and its entry id, then the events.
    private static let completeScript = RedisScript(
        """
        local n = tonumber(ARGV[2])
        for i = 3, 2 + 2 * n, 2 do
          local stream = KEYS[tonumber(ARGV[i])]
          redis.call('XACK', stream, ARGV[1], ARGV[i + 1])
          redis.call('XDEL', stream, ARGV[i + 1])
        end
        for i = 3 + 2 * n, #ARGV do
          redis.call('XADD', KEYS[1], 'MAXLEN', '~', '100000', '*', 'event', ARGV[i])
        end
        return 1
        """)

    /// Acknowledges and deletes delivered messages and publishes their completion events, all in
    /// one atomic step (one round trip). Events of the same run and outcome become one event
    /// listing their tasks, so a batch of 64 finished tasks is one entry for the scheduler to
    /// read, not 64.
    public func complete(
        _ items: [(delivery: Delivery, event: CompletionEvent?)], events extra: [CompletionEvent] = []
    ) throws {
        guard !items.isEmpty || !extra.isEmpty else { return }
        var streams: [String] = [keys.events]
        var index: [String: Int] = [:]
        var args: [any RedisArgument] = [Self.workerGroup, items.count]
        for (d, _) in items {
            let stream = keys.queue(d.queue)
            let k =
                index[stream]
                ?? {
                    streams.append(stream)
                    index[stream] = streams.count
                    return streams.count
                }()
            args.append(k)
            args.append(d.entryID)
        }
        for event in CompletionEvent.merged(items.compactMap(\.event) + extra) { args.append(event.json) }
        try redis.eval(Self.completeScript, keys: streams.map { $0 as any RedisArgument }, args: args)
    }

    private static let deadLetterScript = RedisScript(
        """
        redis.call('XADD', KEYS[2], '*', 'queue', ARGV[3], 'reason', ARGV[4],
                   'body', ARGV[5], 'sig', ARGV[6], 'at', ARGV[7], 'original_id', ARGV[2])
        redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
        redis.call('XDEL', KEYS[1], ARGV[2])
        return 1
        """)

    /// Moves a message that cannot run to the dead letters with `reason`, atomically.
    public func deadLetter(_ d: Delivery, reason: String) throws {
        let now = String(format: "%.3f", Date().timeIntervalSince1970)
        try redis.eval(
            Self.deadLetterScript, keys: [keys.queue(d.queue), keys.dead],
            args: [Self.workerGroup, d.entryID, d.queue, reason, d.body ?? [], d.signature ?? "", now])
    }

    // MARK: Worker liveness

    // Heartbeat times are Redis's own (`TIME`): a worker's age is judged on one clock, never by
    // comparing the worker's wall clock with the reclaimer's.
    private static let heartbeatScript = RedisScript(
        """
        local t = redis.call('TIME')
        local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZADD', KEYS[1], ms, ARGV[1])
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
        return 1
        """)

    /// Records that `worker` is alive now (on Redis's clock), with what it is doing.
    public func heartbeat(worker: String, info: String) throws {
        try redis.eval(Self.heartbeatScript, keys: [keys.heartbeats, keys.workers], args: [worker, info])
    }

    /// Removes a worker that stopped cleanly.
    /// Marks `worker` dead now (its heartbeat set to the epoch), so that live workers reclaim its
    /// pending messages at once instead of after the dead-after time: a worker hands back what it
    /// could not finish this way.
    public func markDead(_ worker: String) throws {
        try redis.command("ZADD", keys.heartbeats, 0, worker)
    }

    public func forgetWorker(_ worker: String) throws {
        _ = try redis.pipeline { p in
            p.add("ZREM", keys.heartbeats, worker)
            p.add("HDEL", keys.workers, worker)
        }
    }

    private static let deadWorkersScript = RedisScript(
        """
        local t = redis.call('TIME')
        local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
        return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', cutoff))
        """)

    /// Workers whose last heartbeat is older than `deadAfter` seconds, on Redis's clock.
    public func deadWorkers(deadAfter: Double) throws -> [String] {
        try redis.eval(Self.deadWorkersScript, keys: [keys.heartbeats], args: [Int(deadAfter * 1000)]).array?
            .compactMap(\.string) ?? []
    }

    /// Moves up to `limit` pending messages of consumers belonging to dead workers (consumer names
    /// are `<worker>/<slot>`) to `consumer`. `XCLAIM`'s minimum idle time makes sure two live
    /// workers never both take the same message. Each idle slot of a worker claims for itself, so a
    /// dead worker's messages spread over the live slots instead of queueing behind one.
    /// Returns how many were taken.
    public func reclaim(queues: [String], deadAfter: Double, consumer: String, limit: Int = 1000) throws -> Int {
        let dead = Set(try deadWorkers(deadAfter: deadAfter))
        guard !dead.isEmpty else { return 0 }
        var taken = 0
        var remaining = false
        for q in queues {
            let stream = keys.queue(q)
            let consumers = try redis.command("XINFO", "CONSUMERS", stream, Self.workerGroup).array ?? []
            for c in consumers {
                guard let fields = c.array, let name = Self.field("name", in: fields)?.string else { continue }
                let owner = String(name.split(separator: "/").first ?? "")
                guard dead.contains(owner) else { continue }
                if taken < limit {
                    let pending =
                        try redis.command("XPENDING", stream, Self.workerGroup, "-", "+", limit - taken, name).array
                        ?? []
                    let ids = pending.compactMap { $0.array?.first?.string }
                    if !ids.isEmpty {
                        // The minimum idle time only keeps two reclaimers from taking the same
                        // entry (a claim resets it); the owner is known dead already. Capped at 2 s,
                        // so that a worker that handed its tasks back (marked itself dead after its
                        // grace) has them taken at once, not once they are idle for dead-after.
                        let minIdle = Int(min(deadAfter, 2) * 1000)
                        let claimed = try redis.command(
                            ["XCLAIM", stream, Self.workerGroup, consumer, minIdle]
                                + ids.map { $0 as any RedisArgument })
                        let n = claimed.array?.count ?? 0
                        taken += n
                        if n > 0 { mayOwnPending = true }
                    }
                }
                // Only a consumer with nothing pending may go: DELCONSUMER drops its pending list.
                let left = try redis.command("XPENDING", stream, Self.workerGroup, "-", "+", 1, name).array ?? []
                if left.isEmpty {
                    try redis.command("XGROUP", "DELCONSUMER", stream, Self.workerGroup, name)
                } else {
                    remaining = true
                }
            }
        }
        if !remaining {
            // Forgotten only once none of its consumers is left in any queue it took from (its
            // heartbeat names them), not only in the queues this reclaimer serves: a worker of its
            // other queues must still find it dead and reclaim what it left there.
            for w in dead where try !hasConsumers(queues: Array(Set(queues).union(try queuesOf(w))), worker: w) {
                try forgetWorker(w)
            }
        }
        return taken
    }

    /// The queues a worker said it takes from, in its last heartbeat.
    private func queuesOf(_ worker: String) throws -> [String] {
        guard let info = try redis.command("HGET", keys.workers, worker).bytes,
            let obj = try? JSONSerialization.jsonObject(with: Data(info)) as? [String: Any]
        else { return [] }
        return obj["queues"] as? [String] ?? []
    }

    private func hasConsumers(queues: [String], worker: String) throws -> Bool {
        for q in queues {
            // A queue whose stream or group is gone has no consumers.
            let reply = try redis.rawCommand(["XINFO", "CONSUMERS", keys.queue(q), Self.workerGroup])
            let consumers = reply.errorMessage == nil ? reply.array ?? [] : []
            if consumers.contains(where: { c in
                (c.array.flatMap { Self.field("name", in: $0)?.string }?.hasPrefix(worker + "/")) ?? false
            }) {
                return true
            }
        }
        return false
    }

    /// The value after `name` in a flat field list (`[k1, v1, k2, v2]`) as Redis returns them.
    public static func field(_ name: String, in flat: [RedisReply]) -> RedisReply? {
        var i = 0
        while i + 1 < flat.count {
            if flat[i].string == name { return flat[i + 1] }
            i += 2
        }
        return nil
    }

    // MARK: Events (scheduler side)

    /// Waits up to `block` seconds for what the scheduler is told: completion events and wake-ups
    /// (pending ones of this consumer first). An entry that is neither comes back as nil, to be
    /// acknowledged and dropped.
    public func readEvents(
        consumer: String, block: Double, count: Int = 100
    ) throws -> [(id: String, notice: SchedulerNotice?)] {
        var out: [(String, SchedulerNotice?)] = []
        for id in mayOwnPending ? ["0", ">"] : [">"] {
            var args: [any RedisArgument] = ["XREADGROUP", "GROUP", Self.schedulerGroup, consumer, "COUNT", count]
            if id == ">" { args += ["BLOCK", max(1, Int(block * 1000))] }
            args += ["STREAMS", keys.events, id]
            let reply = id == ">" ? try redis.blockingCommand(args, blockFor: block) : try redis.command(args)
            for s in reply.array ?? [] {
                for entry in s.array?.last?.array ?? [] {
                    guard let e = entry.array, let eid = e.first?.string else { continue }
                    out.append((eid, e.last?.array.flatMap(Self.notice)))
                }
            }
            if !out.isEmpty { break }
            if id == "0" { mayOwnPending = false }
        }
        return out
    }

    private static func notice(fields: [RedisReply]) -> SchedulerNotice? {
        if let json = field("event", in: fields)?.bytes {
            let event =
                CompletionEvent(flat: json) ?? (try? JSONDecoder().decode(CompletionEvent.self, from: Data(json)))
            return event.map(SchedulerNotice.completion)
        }
        return field("wake", in: fields)?.bytes.flatMap(SchedulerWake.init(flat:)).map(SchedulerNotice.wake)
    }

    /// Tells the scheduler that a run changed (triggered, cleared) so it acts now instead of at its
    /// next tick.
    public func wakeScheduler(dag: String, run: Int64, reason: String, by who: String) throws {
        let wake = SchedulerWake(dag: dag, runID: run, reason: reason, by: who)
        try redis.command("XADD", keys.events, "MAXLEN", "~", 100_000, "*", "wake", wake.json)
    }

    /// Acknowledges and deletes handled events.
    public func ackEvents(_ ids: [String]) throws {
        guard !ids.isEmpty else { return }
        _ = try redis.pipeline { p in
            p.add(["XACK", keys.events, Self.schedulerGroup] + ids.map { $0 as any RedisArgument })
            p.add(["XDEL", keys.events] + ids.map { $0 as any RedisArgument })
        }
    }
}
