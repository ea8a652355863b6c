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

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the log of every attempt of a task.",
        discussion: "Example:\n  etlctl logs weblog load_part_0 --run 12")
    @Argument(help: "The DAG id.") var dag: String
    @Argument(help: "The task id.") var task: String
    @Option(name: .customLong("run"), help: "The run id (default: the latest).") var runID: Int64?
    @Flag(help: "One JSON array instead of text.") var json = false
    func run() throws {
        let ctx = try Context()
        _ = try ctx.task(try ctx.dag(dag), task)
        let store = try ctx.store()
        guard let id = try ctx.listedRunID(dag: dag, run: runID, store: store) else {
            if json { Output.json([Any]()) } else { print(Context.noRuns(dag)) }
            return
        }
        let logs = try failing { try store.attemptLogs(run: id, task: task) }
        if json {
            Output.encoded(logs)
            return
        }
        if logs.isEmpty { print("no attempts of \(dag).\(task) in run \(id) yet") }
        for l in logs {
            print("=== try \(l.tryNumber) on \(l.worker ?? "-"): \(l.state)\(l.error.map { " (\($0))" } ?? "")")
            print(l.log, terminator: l.log.hasSuffix("\n") ? "" : "\n")
        }
    }
}
