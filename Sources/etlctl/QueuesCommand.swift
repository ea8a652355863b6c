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
