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
        abstract: "Print the log of every attempt of a task, or follow the running one.",
        discussion: """
            --follow prints the newest attempt's log as it grows (its worker writes new lines about every
            second) until the attempt ends, waiting for it to start if needed; it follows a retry's new
            attempt too, and exits 0 when the task succeeded, 1 when it failed or was cancelled.
            Examples:
              etlctl logs weblog load_part_0 --run 12
              etlctl logs b2b load_tables --follow
            """)
    @Argument(help: "The DAG id.") var dag: String
    @Argument(help: "The task id.") var task: String
    @Option(name: .customLong("run"), help: "The run id (default: the latest).") var runID: Int64?
    @Flag(help: "One JSON array instead of text.") var json = false
    @Flag(name: [.customShort("f"), .long], help: "Follow the newest attempt's log until the task ends.")
    var follow = false
    func validate() throws {
        if json && follow { throw ValidationError("--follow prints text: leave out --json") }
    }
    func run() throws {
        let ctx = try Context()
        _ = try ctx.task(try ctx.dag(dag), task)
        let store = try ctx.store()
        guard let id = try ctx.listedRunID(dag: dag, run: runID, store: store) else {
            if json { Output.json([Any]()) } else { print(Context.noRuns(dag)) }
            return
        }
        if follow { try Self.follow(store: store, dag: dag, run: id, task: task) }
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

    /// Prints the newest attempt's log as it grows until the task instance has ended.
    static func follow(store: MetadataStore, dag: String, run: Int64, task: String) throws -> Never {
        var tryNumber: Int?
        var offset = 0
        var waitingSaid = false
        while true {
            let t = try failing { try store.logTail(run: run, task: task, tryNumber: tryNumber, offset: offset) }
            if let n = t.tryNumber {
                if n != tryNumber {
                    if tryNumber != nil { print("") }
                    print("=== try \(n) on \(t.worker ?? "-")")
                    tryNumber = n
                    offset = 0
                }
                if !t.text.isEmpty {
                    print(t.text, terminator: "")
                    fflush(nil)
                }
                offset = t.length
            } else if !waitingSaid {
                print("waiting for \(dag).\(task) of run \(run) to start (\(t.taskState ?? "no instance yet"))")
                fflush(nil)
                waitingSaid = true
            }
            // Done when the task instance has ended and its newest attempt is no longer running.
            if let state = t.taskState.flatMap(TaskState.init(rawValue:)), state.isFinished, t.state != "running" {
                if !(t.text.isEmpty || t.text.hasSuffix("\n")) { print("") }
                print("=== \(dag).\(task) of run \(run): \(state.rawValue)\(t.error.map { " (\($0))" } ?? "")")
                Foundation.exit(state == .success ? 0 : 1)
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }
}
