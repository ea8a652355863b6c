import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

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
