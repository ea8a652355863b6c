import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import Tasks

struct DB: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db", abstract: "Housekeeping of the metadata, load records and dead letters.",
        subcommands: [Clean.self])

    struct Clean: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Delete finished runs, attempts, logs, alerts, rejects, load records and dead letters older than "
                + "an age.",
            discussion: """
                Kept whatever their age: unfinished runs, each DAG's newest run, every ledger row (what is loaded,
                so no file or export is loaded again) and the load records a ledger row references. Deletes in
                batches of 500, each its own short transaction, so it never holds up the scheduler or the
                workers. ETL_RETENTION_DAYS makes the leading scheduler run it daily.
                Examples:
                  etlctl db clean --older-than 90d --dry-run
                  etlctl db clean --older-than 12h
                """)
        @Option(name: .customLong("older-than"), help: "An age: 90d, 12h, 30m (a plain number is days).")
        var olderThan: String
        @Flag(help: "Count what would be deleted; delete nothing.") var dryRun = false
        @Flag(help: "One JSON object instead of text.") var json = false
        func validate() throws {
            guard Retention.age(olderThan) != nil else {
                throw ValidationError("--older-than '\(olderThan)' is not an age. Example: --older-than 90d")
            }
        }
        func run() throws {
            let ctx = try Context()
            let store = try ctx.store()
            let settings = try failing { try PipelineSettings(environment: ctx.env) }
            let clean = {
                try Retention.clean(
                    pg: store.pg, schema: ctx.schema, loads: settings.loads, queue: try ctx.queue(),
                    olderThan: Retention.age(olderThan)!, dryRun: dryRun)
            }
            let counts = try failing {
                dryRun
                    ? try clean() : try ctx.operations().audited("db-clean", "older than \(olderThan)") { try clean() }
            }
            if json {
                Output.encoded(counts)
            } else {
                print("\(dryRun ? "would delete" : "deleted") \(counts.summary), older than \(olderThan)")
            }
        }
    }
}
