import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

extension ETLCtl {
    struct Loads: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load metadata: when each load started, broke and finished, with row counts; and rejected rows.",
            subcommands: [List.self, Rejects.self, WatermarksCmd.self]
        )

        struct WatermarksCmd: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "watermarks",
                abstract: "How far each source is complete: the day through which a report may read it.",
                discussion: """
                    b2b: every export day from the history's start through that day is loaded. weblog: the \
                    latest day no access-log file still loading has lines on or before. A report for D \
                    starts only when the sources it reads are complete through D.
                    Example:
                      etlctl loads watermarks
                    """
            )
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let ops = try Context().operations()
                let rows = try failing { try ops.watermarks(settings: s) }
                if json {
                    Output.encoded(rows)
                    return
                }
                Output.table(
                    ["SOURCE", "COMPLETE THROUGH", "STILL LOADING"],
                    rows.map { [$0.name, $0.through ?? "(nothing loaded)", $0.pending.isEmpty ? "-" : $0.pending] })
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List loads, newest first.",
                discussion: "Example:\n  etlctl loads list --pipeline weblog --limit 20"
            )
            @Option(help: ArgumentHelp("Only this pipeline (\(PipelineDAGs.ingestions.joined(separator: ", ")))."))
            var pipeline: String?
            @Option(help: "How many loads.") var limit: Int = 50
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let ops = try Context().operations()
                let rows = try failing { try ops.loads(pipeline: pipeline, limit: limit, settings: s) }
                if json {
                    Output.encoded(rows)
                    return
                }
                if rows.isEmpty {
                    print(LoadQueries.emptyMessage(pipeline: pipeline))
                    return
                }
                Output.table(
                    [
                        "ID", "PIPELINE", "SOURCE", "STATE", "STARTED", "BROKE", "FINISHED", "READ", "LOADED",
                        "REJECTED", "ERROR",
                    ],
                    rows.map { r in
                        [
                            String(r.id), r.pipeline, r.source, r.state, Output.time(r.startedAt),
                            Output.time(r.brokeAt), Output.time(r.finishedAt),
                            String(r.rowsRead), String(r.rowsLoaded), String(r.rowsRejected),
                            String(r.error.prefix(60)),
                        ]
                    })
            }
        }

        struct Rejects: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List the rows a load rejected, with their line and reason.",
                discussion: "Example:\n  etlctl loads rejects 12 --limit 100"
            )
            @Argument(help: "The load id (etlctl loads list).") var load: Int64
            @Option(help: "How many rows.") var limit: Int = 100
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let ops = try Context().operations()
                let rows = try failing { try ops.rejects(load: load, limit: limit, settings: s) }
                if json {
                    Output.encoded(rows)
                    return
                }
                if rows.isEmpty {
                    print("load \(load) rejected nothing")
                    return
                }
                Output.table(
                    ["SOURCE", "LINE", "REASON", "RAW"],
                    rows.map { [$0.source, String($0.line), $0.reason, String($0.raw.prefix(80))] })
            }
        }
    }
}
