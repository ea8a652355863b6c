import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

struct Queues: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Queue depth, messages in flight per worker and for how long, delayed retries, dead letters.",
        discussion: "Example:\n  etlctl queues --json")
    @Flag(help: "One JSON object instead of a table.") var json = false
    func run() throws {
        let ctx = try Context()
        let queue = try ctx.queue()
        let store = try ctx.store()
        let depths = try failing { try queue.depths(ctx.registry.queues.isEmpty ? ["default"] : ctx.registry.queues) }
        let delayed = try failing { try store.retryingCount() }
        let dead = try failing { try queue.deadLetterCount() }
        if json {
            struct Out: Encodable {
                let queues: [TaskQueue.Depth]
                let delayedRetries: Int
                let deadLetters: Int
                enum CodingKeys: String, CodingKey {
                    case queues
                    case delayedRetries = "delayed_retries"
                    case deadLetters = "dead_letters"
                }
            }
            Output.encoded(Out(queues: depths, delayedRetries: delayed, deadLetters: dead))
            return
        }
        Output.table(
            ["QUEUE", "WAITING", "IN FLIGHT", "OLDEST IN FLIGHT"],
            depths.map { d in
                [
                    d.queue, "\(d.waiting)", "\(d.inFlight.count)",
                    d.inFlight.map(\.idleSeconds).max().map { String(format: "%.1fs", $0) } ?? "-",
                ]
            })
        for d in depths {
            for f in d.inFlight {
                print(
                    "  \(d.queue) \(f.id) on \(f.consumer) for \(String(format: "%.1f", f.idleSeconds))s"
                        + " (delivered \(f.deliveries)x)"
                )
            }
        }
        print("delayed retries: \(delayed)   dead letters: \(dead)\(dead > 0 ? " (etlctl dead-letters list)" : "")")
    }
}

struct Workers: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live workers: heartbeat age and current tasks.", discussion: "Example:\n  etlctl workers")
    @Flag(help: "One JSON array instead of a table.") var json = false
    func run() throws {
        let ctx = try Context()
        let queue = try ctx.queue()
        let rows = try failing { try queue.workers() }
        if json {
            Output.encoded(rows)
            return
        }
        if rows.isEmpty {
            print("no workers have reported. Start one with: worker --concurrency 2")
            return
        }
        Output.table(
            ["WORKER", "ALIVE", "HEARTBEAT", "SLOTS", "CURRENT TASKS"],
            rows.map {
                [
                    $0.worker, $0.alive ? "yes" : "no", String(format: "%.1fs ago", $0.heartbeatAgeSeconds),
                    "\($0.concurrency)", $0.tasks.joined(separator: "; "),
                ]
            })
    }
}

struct DeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters", abstract: "Messages that could not run, with their reasons.",
        subcommands: [List.self, Requeue.self, Purge.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters.", discussion: "Example:\n  etlctl dead-letters list --json")
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            let queue = try ctx.queue()
            let rows = try failing { try queue.deadLetters() }
            if json {
                Output.encoded(rows)
                return
            }
            if rows.isEmpty {
                print("no dead letters")
                return
            }
            Output.table(["ID", "QUEUE", "BYTES", "REASON"], rows.map { [$0.id, $0.queue, "\($0.bytes)", $0.reason] })
        }
    }

    struct Requeue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back on their queue (after fixing the cause).",
            discussion: "Example:\n  etlctl dead-letters requeue --all")
        @Argument(help: "Dead letter ids (from list).") var ids: [String] = []
        @Flag(help: "Every dead letter.") var all = false
        func validate() throws {
            if ids.isEmpty && !all {
                throw ValidationError("name dead letter ids, or --all. Example: etlctl dead-letters requeue --all")
            }
        }
        func run() throws {
            let ctx = try Context()
            let ops = ctx.operations()
            let n = try failing { try ops.requeueDeadLetters(ids: all ? nil : Set(ids)) }
            print("requeued \(n) message(s)")
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every dead letter.", discussion: "Example:\n  etlctl dead-letters purge")
        func run() throws {
            let ctx = try Context()
            let queue = try ctx.queue()
            let n = try failing { try queue.purgeDeadLetters() }
            print("purged \(n) dead letter(s)")
        }
    }
}
