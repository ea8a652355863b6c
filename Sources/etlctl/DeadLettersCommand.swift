import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

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
            let n = try failing {
                try ctx.operations().audited("purge", "dead letters") { try queue.purgeDeadLetters() }
            }
            print("purged \(n) dead letter(s)")
        }
    }
}
