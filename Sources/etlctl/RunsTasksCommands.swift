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

struct Runs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "List DAG runs, or wait for one.", subcommands: [List.self, Wait.self])

    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait for a run to end; exit 0 only when it succeeded.",
            discussion: "Example:\n  etlctl runs wait weblog --date 2024-06-01 --timeout 600")
        @Argument(help: "The DAG id.") var dag: String
        @Option(name: .customLong("run"), help: "The run id (default: the run for --date, else the latest run).")
        var runID: Int64?
        @Option(help: "The run's logical date, YYYY-MM-DD.") var date: String?
        @Option(help: "Seconds to wait.") var timeout: Double = 3600
        @Flag(help: "Print the result as JSON.") var json = false
        func run() throws {
            let ctx = try Context()
            _ = try ctx.dag(dag)
            let store = try ctx.store()
            var id = runID
            if id == nil, let date {
                let when = try day(date)
                guard let r = try ctx.run(dag: dag, on: when, store: store) else {
                    throw fail("DAG '\(dag)' has no run for \(when). Fix: etlctl dags trigger \(dag) --date \(when)")
                }
                id = r.id
            }
            try waitForRun(
                store: store, dag: dag, run: try ctx.runID(dag: dag, run: id, store: store), timeout: timeout,
                json: json)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List recent runs, newest first.", discussion: "Example:\n  etlctl runs list b2b --limit 5")
        @Argument(help: "Only this DAG.") var dag: String?
        @Option(help: "How many runs.") var limit: Int = 20
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            if let dag { _ = try ctx.dag(dag) }
            let rows = try failing { try ctx.store().runRows(dag: dag, limit: max(1, limit)) }
            if rows.isEmpty && !json {
                print(
                    dag.map(Context.noRuns)
                        ?? ("no runs yet: the scheduler creates them on schedule for unpaused DAGs,"
                            + " or etlctl dags trigger DAG")
                )
                return
            }
            if json {
                Output.json(
                    rows.map {
                        [
                            "run": $0.id, "dag": $0.dag, "logical_date": PostgresTimestamp.format($0.logicalDate),
                            "type": $0.type.rawValue,
                            "state": $0.state.rawValue, "started_at": Output.jsonTime($0.startedAt),
                            "ended_at": Output.jsonTime($0.endedAt),
                        ] as [String: Any]
                    })
            } else {
                Output.table(
                    ["RUN", "DAG", "LOGICAL DATE", "TYPE", "STATE", "STARTED", "DURATION"],
                    rows.map {
                        [
                            String($0.id), $0.dag, String(PostgresTimestamp.format($0.logicalDate).prefix(10)),
                            $0.type.rawValue, $0.state.rawValue,
                            Output.time($0.startedAt), Output.duration($0.startedAt, $0.endedAt),
                        ]
                    })
            }
        }
    }
}

struct TasksCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks", abstract: "List, retry and clear task instances.",
        subcommands: [List.self, Retry.self, Clear.self])

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

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restart failed tasks and what depends on them.",
            discussion: "Example:\n  etlctl tasks clear --failed weblog")
        @Flag(help: "Clear failed and upstream-failed tasks (required, so nothing else is cleared by mistake).")
        var failed = false
        @Argument(help: "Only this DAG.") var dag: String?
        func validate() throws {
            guard failed else {
                throw ValidationError("say which tasks: --failed. Example: etlctl tasks clear --failed b2b")
            }
        }
        func run() throws {
            let ctx = try Context()
            if let dag { _ = try ctx.dag(dag) }
            let ops = ctx.operations()
            let total = try failing { try ops.clearAllFailed(dag: dag) }
            print("cleared \(total) task(s)")
        }
    }
}

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
