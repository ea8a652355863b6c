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

struct TasksCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks", abstract: "List, retry, cancel, clear and test task instances.",
        subcommands: [List.self, Retry.self, Cancel.self, Clear.self, TaskTest.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The tasks of a run (default: the DAG's latest run).",
            discussion: "Example:\n  etlctl tasks list b2b --run 12")
        @Argument(help: "The DAG id.") var dag: String
        @Option(name: .customLong("run"), help: "The run id.") var runID: Int64?
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            _ = try ctx.dag(dag)
            let store = try ctx.store()
            guard let id = try ctx.listedRunID(dag: dag, run: runID, store: store) else {
                if json { Output.json([Any]()) } else { print(Context.noRuns(dag)) }
                return
            }
            let rows = try failing { try store.taskRows(run: id) }
            if json {
                Output.json(
                    rows.map {
                        [
                            "run": id, "task": $0.task, "state": $0.state, "try": $0.tryNumber,
                            "max_tries": $0.maxTries,
                            "worker": $0.worker ?? NSNull(), "started_at": Output.jsonTime($0.startedAt),
                            "ended_at": Output.jsonTime($0.endedAt), "error": $0.error ?? NSNull(),
                        ] as [String: Any]
                    })
            } else {
                print("run \(id)")
                Output.table(
                    ["TASK", "STATE", "TRY", "WORKER", "STARTED", "DURATION", "ERROR"],
                    rows.map {
                        [
                            $0.task, $0.state, "\($0.tryNumber)/\($0.maxTries)", $0.worker ?? "-",
                            Output.time($0.startedAt),
                            Output.duration($0.startedAt, $0.endedAt), String(($0.error ?? "").prefix(60)),
                        ]
                    })
            }
        }
    }

    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a finished task again, and everything downstream of it.",
            discussion: "Example:\n  etlctl tasks retry b2b load_tables --run 12")
        @Argument(help: "The DAG id.") var dag: String
        @Argument(help: "The task id.") var task: String
        @Option(name: .customLong("run"), help: "The run id (default: the latest).") var runID: Int64?
        func run() throws {
            let ctx = try Context()
            let d = try ctx.dag(dag)
            _ = try ctx.task(d, task)
            let ops = ctx.operations()
            let id = try ctx.runID(dag: dag, run: runID, store: try ops.store)
            let n = try failing { try ops.retry(dag: d.id, run: id, task: task) }
            print("cleared \(n) task(s) of \(dag) run \(id); the scheduler runs them again")
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a running task (or one not started yet); it is not retried.",
            discussion: """
                Its worker interrupts it within a few seconds and rolls back what it had not committed
                (a load keeps the days or chunks it committed, and a retry resumes from them). What depends
                on it becomes upstream-failed and the run fails; `etlctl tasks retry` runs it again.
                --wait waits until it has stopped.
                Example:
                  etlctl tasks cancel b2b load_tables --run 12 --wait
                """)
        @Argument(help: "The DAG id.") var dag: String
        @Argument(help: "The task id.") var task: String
        @Option(name: .customLong("run"), help: "The run id (default: the latest).") var runID: Int64?
        @Flag(help: "Wait until the task has stopped (up to 60 s), then print how it ended.") var wait = false
        func run() throws {
            let ctx = try Context()
            let d = try ctx.dag(dag)
            _ = try ctx.task(d, task)
            let ops = ctx.operations()
            let store = try ops.store
            let id = try ctx.runID(dag: dag, run: runID, store: store)
            let outcome = try failing { try ops.cancel(dag: d.id, run: id, task: task) }
            print(OperatorActions.describe(outcome, task: task, run: id))
            guard wait, case .stopping = outcome else { return }
            let end = Date().addingTimeInterval(60)
            while Date() < end {
                if let row = try store.taskRows(run: id).first(where: { $0.task == task }), row.state != "running" {
                    print("\(task) of run \(id): \(row.state)\(row.error.map { " (\($0))" } ?? "")")
                    if row.state != TaskState.cancelled.rawValue { throw ExitCode(1) }
                    return
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
            print("\(task) of run \(id) is still running after 60 s")
            throw ExitCode(1)
        }
    }

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restart failed tasks and what depends on them.",
            discussion: """
                Examples:
                  etlctl tasks clear --failed weblog                     (every run of weblog)
                  etlctl tasks clear --failed weblog --date 2026-12-06   (only its run for that date)
                """)
        @Flag(help: "Clear failed and upstream-failed tasks (required, so nothing else is cleared by mistake).")
        var failed = false
        @Argument(help: "Only this DAG.") var dag: String?
        @Option(help: "Only the DAG's run for this logical date, YYYY-MM-DD (needs the DAG).") var date: String?
        func validate() throws {
            guard failed else {
                throw ValidationError("say which tasks: --failed. Example: etlctl tasks clear --failed b2b")
            }
            if date != nil, dag == nil {
                throw ValidationError(
                    "--date needs the DAG. Example: etlctl tasks clear --failed b2b --date 2026-12-06")
            }
        }
        func run() throws {
            let ctx = try Context()
            if let dag { _ = try ctx.dag(dag) }
            let ops = ctx.operations()
            if let dag, let date {
                let when = try day(date)
                guard let r = try ctx.run(dag: dag, on: when, store: try ops.store) else {
                    throw fail("DAG '\(dag)' has no run for \(when). Fix: etlctl dags trigger \(dag) --date \(when)")
                }
                let n = try failing { try ops.clearFailed(dag: dag, run: r.id) }
                print("cleared \(n) task(s) of \(dag) run \(r.id) (\(when))")
                return
            }
            let total = try failing { try ops.clearAllFailed(dag: dag) }
            print("cleared \(total) task(s)")
        }
    }
}
