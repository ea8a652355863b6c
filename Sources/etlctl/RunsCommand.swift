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
                            "ended_at": Output.jsonTime($0.endedAt), "params": $0.params, "variant": $0.variant,
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
