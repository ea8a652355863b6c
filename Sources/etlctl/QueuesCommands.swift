import ArgumentParser
import Foundation
import Shared

struct Queues: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Queue depth, messages in flight per worker and for how long, delayed retries, dead letters.",
        discussion: "Example:\n  etlctl queues --json")
    @Flag(help: "One JSON object instead of a table.") var json = false
    func run() throws {
        let ctx = try Context()
        let queue = try ctx.queue()
        let store = try ctx.store()
        let names = ctx.registry.queues.isEmpty ? ["default"] : ctx.registry.queues
        var rows: [[String: Any]] = []
        for q in names {
            let stream = queue.keys.queue(q)
            let length = try failing { try queue.redis.command("XLEN", stream).int ?? 0 }
            var inFlight: [[String: Any]] = []
            let pending = try failing { try queue.redis.rawCommand(["XPENDING", stream, TaskQueue.workerGroup, "-", "+", 1000]) }
            for p in pending.array ?? [] {
                guard let f = p.array, f.count >= 4 else { continue }
                inFlight.append(["id": f[0].string ?? "", "consumer": f[1].string ?? "", "idle_seconds": Double(f[2].int ?? 0) / 1000, "deliveries": f[3].int ?? 0])
            }
            rows.append(["queue": q, "waiting": max(0, length - inFlight.count), "in_flight": inFlight])
        }
        let delayed = try failing { try store.retryingCount() }
        let dead = try failing { try queue.redis.command("XLEN", queue.keys.dead).int ?? 0 }
        if json {
            Output.json(["queues": rows, "delayed_retries": delayed, "dead_letters": dead])
            return
        }
        Output.table(["QUEUE", "WAITING", "IN FLIGHT", "OLDEST IN FLIGHT"], rows.map { r in
            let flight = r["in_flight"] as! [[String: Any]]
            let oldest = flight.map { $0["idle_seconds"] as! Double }.max()
            return [r["queue"] as! String, "\(r["waiting"]!)", "\(flight.count)", oldest.map { String(format: "%.1fs", $0) } ?? "-"]
        })
        for r in rows {
            for f in r["in_flight"] as! [[String: Any]] {
                print("  \(r["queue"]!) \(f["id"]!) on \(f["consumer"]!) for \(String(format: "%.1f", f["idle_seconds"] as! Double))s (delivered \(f["deliveries"]!)x)")
            }
        }
        print("delayed retries: \(delayed)   dead letters: \(dead)\(dead > 0 ? " (etlctl dead-letters list)" : "")")
    }
}

struct Workers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Live workers: heartbeat age and current tasks.", discussion: "Example:\n  etlctl workers")
    @Flag(help: "One JSON array instead of a table.") var json = false
    func run() throws {
        let ctx = try Context()
        let queue = try ctx.queue()
        let beats = try failing { try queue.redis.command("ZRANGE", queue.keys.heartbeats, 0, -1, "WITHSCORES").array ?? [] }
        let now = Date().timeIntervalSince1970
        var rows: [[String: Any]] = []
        var i = 0
        while i + 1 < beats.count {
            let name = beats[i].string ?? ""
            let age = now - Double(beats[i + 1].string.flatMap(Double.init) ?? 0) / 1000
            let info = try failing { try queue.redis.command("HGET", queue.keys.workers, name).bytes }
            let obj = info.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
            rows.append(["worker": name, "heartbeat_age_seconds": (age * 10).rounded() / 10, "alive": age < 10,
                         "tasks": obj["tasks"] ?? [], "queues": obj["queues"] ?? [], "concurrency": obj["concurrency"] ?? 0])
            i += 2
        }
        if json { Output.json(rows); return }
        if rows.isEmpty { print("no workers have reported. Start one with: worker --concurrency 2") ; return }
        Output.table(["WORKER", "ALIVE", "HEARTBEAT", "SLOTS", "CURRENT TASKS"], rows.map {
            [$0["worker"] as! String, ($0["alive"] as! Bool) ? "yes" : "no", String(format: "%.1fs ago", $0["heartbeat_age_seconds"] as! Double),
             "\($0["concurrency"]!)", (($0["tasks"] as? [String]) ?? []).joined(separator: "; ")]
        })
    }
}

struct DeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dead-letters", abstract: "Messages that could not run, with their reasons.",
                                                    subcommands: [List.self, Requeue.self, Purge.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters.", discussion: "Example:\n  etlctl dead-letters list --json")
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            let queue = try ctx.queue()
            let entries = try failing { try queue.redis.command("XRANGE", queue.keys.dead, "-", "+").array ?? [] }
            let rows: [[String: Any]] = entries.compactMap { e in
                guard let a = e.array, let id = a.first?.string, let f = a.last?.array else { return nil }
                let body = TaskQueue.field("body", in: f)?.bytes ?? []
                return ["id": id, "queue": TaskQueue.field("queue", in: f)?.string ?? "", "reason": TaskQueue.field("reason", in: f)?.string ?? "",
                        "bytes": body.count, "at": TaskQueue.field("at", in: f)?.string ?? ""]
            }
            if json { Output.json(rows); return }
            if rows.isEmpty { print("no dead letters"); return }
            Output.table(["ID", "QUEUE", "BYTES", "REASON"], rows.map { [$0["id"] as! String, $0["queue"] as! String, "\($0["bytes"]!)", $0["reason"] as! String] })
        }
    }

    struct Requeue: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put dead letters back on their queue (after fixing the cause).",
                                                        discussion: "Example:\n  etlctl dead-letters requeue --all")
        @Argument(help: "Dead letter ids (from list).") var ids: [String] = []
        @Flag(help: "Every dead letter.") var all = false
        func validate() throws { if ids.isEmpty && !all { throw ValidationError("name dead letter ids, or --all. Example: etlctl dead-letters requeue --all") } }
        func run() throws {
            let ctx = try Context()
            let queue = try ctx.queue()
            let entries = try failing { try queue.redis.command("XRANGE", queue.keys.dead, "-", "+").array ?? [] }
            var n = 0
            for e in entries {
                guard let a = e.array, let id = a.first?.string, let f = a.last?.array, all || ids.contains(id) else { continue }
                let q = TaskQueue.field("queue", in: f)?.string ?? "default"
                try failing {
                    try queue.enqueueRaw(queue: q, fields: [("body", TaskQueue.field("body", in: f)?.bytes ?? []),
                                                            ("sig", Array((TaskQueue.field("sig", in: f)?.string ?? "").utf8))])
                    try queue.redis.command("XDEL", queue.keys.dead, id)
                }
                n += 1
            }
            print("requeued \(n) message(s)")
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every dead letter.", discussion: "Example:\n  etlctl dead-letters purge")
        func run() throws {
            let ctx = try Context()
            let queue = try ctx.queue()
            let n = try failing { try queue.redis.command("XLEN", queue.keys.dead).int ?? 0 }
            _ = try failing { try queue.redis.command("DEL", queue.keys.dead) }
            print("purged \(n) dead letter(s)")
        }
    }
}
