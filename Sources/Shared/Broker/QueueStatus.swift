import ETLSupport
import Foundation
import RedisClient
import Workflow

/// What an operator sees of the broker: queue depth and messages in flight, live workers, dead
/// letters. `etlctl` and the web UI both read it from here, so they always agree.
extension TaskQueue {
    public struct InFlight: Codable, Sendable, Equatable {
        public let id: String
        public let consumer: String
        public let idleSeconds: Double
        public let deliveries: Int
        enum CodingKeys: String, CodingKey {
            case id, consumer
            case idleSeconds = "idle_seconds"
            case deliveries
        }
    }

    public struct Depth: Codable, Sendable, Equatable {
        public let queue: String
        /// Messages not yet handed to a worker.
        public let waiting: Int
        public let inFlight: [InFlight]
        /// Seconds since the oldest message still in the stream was added (0 when empty).
        public let oldestAgeSeconds: Double
        enum CodingKeys: String, CodingKey {
            case queue, waiting
            case inFlight = "in_flight"
            case oldestAgeSeconds = "oldest_age_seconds"
        }
    }

    /// Depth of each queue in `names`, with up to 1,000 in-flight messages each.
    public func depths(_ names: [String]) throws -> [Depth] {
        try names.map { q in
            let stream = keys.queue(q)
            let length = try redis.command("XLEN", stream).int ?? 0
            var inFlight: [InFlight] = []
            let pending = try redis.rawCommand(["XPENDING", stream, Self.workerGroup, "-", "+", 1000])
            for p in pending.array ?? [] {
                guard let f = p.array, f.count >= 4, let id = f[0].string else { continue }
                inFlight.append(
                    InFlight(
                        id: id, consumer: f[1].string ?? "", idleSeconds: Double(f[2].int ?? 0) / 1000,
                        deliveries: f[3].int ?? 0))
            }
            var oldest = 0.0
            if length > 0,
                let first = try redis.command("XRANGE", stream, "-", "+", "COUNT", 1).array?.first?.array?.first?
                    .string,
                let ms = first.split(separator: "-").first.flatMap({ Double($0) })
            {
                oldest = max(0, Date().timeIntervalSince1970 - ms / 1000)
            }
            return Depth(
                queue: q, waiting: max(0, length - inFlight.count), inFlight: inFlight,
                oldestAgeSeconds: (oldest * 10).rounded() / 10)
        }
    }

    public struct WorkerStatus: Codable, Sendable, Equatable {
        public let worker: String
        public let heartbeatAgeSeconds: Double
        public let alive: Bool
        public let tasks: [String]
        public let queues: [String]
        public let concurrency: Int
        enum CodingKeys: String, CodingKey {
            case worker
            case heartbeatAgeSeconds = "heartbeat_age_seconds"
            case alive, tasks, queues, concurrency
        }
    }

    /// Workers that have heartbeated (a worker that stopped cleanly removed itself). A worker is
    /// alive when its last heartbeat is younger than `deadAfter` seconds.
    public func workers(deadAfter: Double = 10) throws -> [WorkerStatus] {
        let beats = try redis.command("ZRANGE", keys.heartbeats, 0, -1, "WITHSCORES").array ?? []
        // Every worker's info in one round trip: field, value, field, value, ...
        let all = try redis.command("HGETALL", keys.workers).array ?? []
        var infos: [String: [UInt8]] = [:]
        for i in stride(from: 0, to: all.count - 1, by: 2) {
            if let k = all[i].string, let v = all[i + 1].bytes { infos[k] = v }
        }
        // Ages on Redis's clock, where the heartbeats were stamped.
        let time = try redis.command("TIME").array?.compactMap { $0.string.flatMap(Double.init) } ?? []
        let now = time.count == 2 ? time[0] + time[1] / 1e6 : Date().timeIntervalSince1970
        var rows: [WorkerStatus] = []
        var i = 0
        while i + 1 < beats.count {
            let name = beats[i].string ?? ""
            let age = now - Double(beats[i + 1].string.flatMap(Double.init) ?? 0) / 1000
            let info = infos[name]
            let obj = info.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
            rows.append(
                WorkerStatus(
                    worker: name, heartbeatAgeSeconds: (age * 10).rounded() / 10, alive: age < deadAfter,
                    tasks: obj["tasks"] as? [String] ?? [], queues: obj["queues"] as? [String] ?? [],
                    concurrency: obj["concurrency"] as? Int ?? 0))
            i += 2
        }
        return rows
    }

    public struct DeadLetter: Codable, Sendable, Equatable {
        public let id: String
        public let queue: String
        public let reason: String
        public let bytes: Int
        public let at: String
    }

    /// Dead letters, oldest first (at most `limit`).
    public func deadLetters(limit: Int = 10_000) throws -> [DeadLetter] {
        let entries = try redis.command("XRANGE", keys.dead, "-", "+", "COUNT", limit).array ?? []
        return entries.compactMap { e in
            guard let a = e.array, let id = a.first?.string, let f = a.last?.array else { return nil }
            return DeadLetter(
                id: id, queue: Self.field("queue", in: f)?.string ?? "",
                reason: Self.field("reason", in: f)?.string ?? "",
                bytes: Self.field("body", in: f)?.bytes?.count ?? 0, at: Self.field("at", in: f)?.string ?? "")
        }
    }

    /// Moves one dead letter back to its queue in one step: only the caller whose XDEL removed it
    /// adds it, so two operators requeueing at once never queue it twice.
    private static let requeueScript = RedisScript(
        """
        if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
          redis.call('XADD', KEYS[2], '*', 'body', ARGV[2], 'sig', ARGV[3])
          return 1
        end
        return 0
        """)

    /// Puts dead letters back on their queues, as they were signed (all of them when `ids` is nil).
    /// Returns how many were requeued; unknown ids are skipped.
    public func requeueDeadLetters(ids: Set<String>?) throws -> Int {
        let entries: [RedisReply]
        if let ids {
            // Only well-formed stream ids (digits-digits) are looked up; anything else names no entry.
            let valid = ids.filter { id in
                let parts = id.split(separator: "-", omittingEmptySubsequences: false)
                return parts.count == 2
                    && parts.allSatisfy {
                        !$0.isEmpty && $0.count <= 20 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber)
                    }
            }
            entries = try valid.sorted().flatMap { try redis.command("XRANGE", keys.dead, $0, $0).array ?? [] }
        } else {
            entries = try redis.command("XRANGE", keys.dead, "-", "+").array ?? []
        }
        var n = 0
        for e in entries {
            guard let a = e.array, let id = a.first?.string, let f = a.last?.array else { continue }
            let queue = keys.queue(Self.field("queue", in: f)?.string ?? "default")
            n +=
                try redis.eval(
                    Self.requeueScript, keys: [keys.dead, queue],
                    args: [id, Self.field("body", in: f)?.bytes ?? [], Self.field("sig", in: f)?.string ?? ""]
                ).int ?? 0
        }
        return n
    }

    /// How many dead letters there are.
    public func deadLetterCount() throws -> Int { try redis.command("XLEN", keys.dead).int ?? 0 }

    /// Dead letters added before `cutoff` (by their stream id's time): how many there are, and,
    /// unless `dryRun`, deleted (`XTRIM MINID`, exact). Retention's way to bound the stream, so no
    /// dead letter is ever dropped unseen by a length cap.
    public func trimDeadLetters(before cutoff: Date, dryRun: Bool) throws -> Int {
        let ms = Int64(cutoff.timeIntervalSince1970 * 1000)
        if !dryRun { return try redis.command("XTRIM", keys.dead, "MINID", "\(ms)-0").int ?? 0 }
        var n = 0
        var from = "-"
        while true {
            let page = try redis.command("XRANGE", keys.dead, from, "(\(ms)-0", "COUNT", 1000).array ?? []
            n += page.count
            guard page.count == 1000, let last = page.last?.array?.first?.string else { return n }
            from = "(" + last
        }
    }

    /// Deletes every dead letter; returns how many there were.
    public func purgeDeadLetters() throws -> Int {
        let n = try deadLetterCount()
        _ = try redis.command("DEL", keys.dead)
        return n
    }
}
