import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

struct Dags: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dags", abstract: "List, pause, unpause and trigger DAGs.",
        subcommands: [List.self, Pause.self, Unpause.self, Trigger.self, Params.self, Latest.self, Backfill.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the DAGs with their schedule, tags and last run.",
            discussion: "Example:\n  etlctl dags list --json")
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let ctx = try Context()
            let store = try ctx.store()
            let rows = try failing { try store.dagRows() }
            let last = try failing { () -> [String: MetadataStore.RunRow] in
                var m: [String: MetadataStore.RunRow] = [:]
                for r in try store.runRows(dag: nil, limit: 10_000) where m[r.dag] == nil { m[r.dag] = r }
                return m
            }
            let dags = rows.filter { ctx.registry.dag($0.id) != nil }
            // The pools the DAG's tasks use, with their slots.
            func pools(_ dag: String) -> [String: Int] {
                let names = Set(ctx.registry.dag(dag)?.tasks.compactMap(\.pool) ?? [])
                return ctx.registry.pools.filter { names.contains($0.key) }
            }
            if json {
                Output.json(
                    dags.map { d -> [String: Any] in
                        [
                            "dag": d.id, "paused": d.paused, "schedule": d.schedule, "tags": d.tags,
                            "upstream_dags": ctx.registry.dag(d.id)?.upstreamDAGs ?? [],
                            "max_active_runs": ctx.registry.dag(d.id)?.maxActiveRuns ?? 0,
                            "pools": pools(d.id),
                            "last_run": last[d.id].map {
                                [
                                    "run": $0.id, "state": $0.state,
                                    "logical_date": PostgresTimestamp.format($0.logicalDate),
                                ] as [String: Any]
                            } ?? NSNull(),
                        ]
                    })
            } else {
                Output.table(
                    ["DAG", "PAUSED", "SCHEDULE", "MAX RUNS", "POOLS", "TAGS", "LAST RUN"],
                    dags.map { d in
                        [
                            d.id, d.paused ? "yes" : "no", d.schedule,
                            String(ctx.registry.dag(d.id)?.maxActiveRuns ?? 0),
                            pools(d.id).sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }
                                .joined(separator: ",").nonEmpty ?? "-",
                            d.tags.joined(separator: ","),
                            last[d.id].map { "\($0.id) \($0.state)" } ?? "-",
                        ]
                    })
            }
        }
    }

    struct Pause: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pause a DAG: no new runs, no new tasks.", discussion: "Example:\n  etlctl dags pause b2b")
        @Argument(help: "The DAG id.") var dag: String
        func run() throws { try setPaused(dag, true) }
    }

    struct Unpause: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unpause a DAG.", discussion: "Example:\n  etlctl dags unpause b2b")
        @Argument(help: "The DAG id.") var dag: String
        func run() throws { try setPaused(dag, false) }
    }

    struct Latest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the logical date (YYYY-MM-DD) of a DAG's latest complete interval.",
            discussion: """
                The run its scheduler makes when the DAG is unpaused (catchup off): for a daily DAG at any \
                moment of 2024-06-02, 2024-06-01. For a DAG without a schedule, yesterday. scripts/run \
                ingests and reports this date. Example:
                  etlctl dags latest b2b
                """
        )
        @Argument(help: "The DAG id.") var dag: String

        func run() throws {
            let ctx = try Context()
            let date = try failing { try ctx.operations().latestInterval(dag) }
            print(PostgresTimestamp.format(date).prefix(10))
        }
    }

    struct Params: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the parameters a DAG's runs may be given, with their types and defaults.",
            discussion: """
                "output" parameters define what a run writes (another value, another file) and may be
                set on any manual run; "manual only" ones are refused for scheduled and backfilled runs.
                Example:
                  etlctl dags params popular-devices
                """)
        @Argument(help: "The DAG id.") var dag: String
        @Flag(help: "One JSON array instead of a table.") var json = false
        func run() throws {
            let d = try Context().dag(dag)
            func effect(_ p: DAGParam) -> String { p.effect == .definesOutput ? "output" : "manual only" }
            if json {
                Output.json(
                    d.params.map {
                        [
                            "name": $0.name, "type": $0.typeDescription, "default": $0.defaultValue,
                            "effect": effect($0), "help": $0.help,
                        ]
                    })
            } else if d.params.isEmpty {
                print("DAG \(dag) declares no parameters")
            } else {
                Output.table(
                    ["PARAM", "TYPE", "DEFAULT", "EFFECT", "WHAT IT DOES"],
                    d.params.map {
                        [$0.name, $0.typeDescription, $0.defaultValue.nonEmpty ?? "-", effect($0), $0.help]
                    })
            }
        }
    }

    struct Trigger: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a run of a DAG now.",
            discussion: """
                With --wait, exits 0 only when the run succeeded. --param sets one of the DAG's
                parameters for this run (etlctl dags params DAG lists them); a wrong one is refused
                before any run is made. Examples:
                  etlctl dags trigger monthly-sales --date 2024-05-01 --wait
                  etlctl dags trigger popular-devices --date 2024-05-01 --param top=20
                """
        )
        @Argument(help: "The DAG id.") var dag: String
        @Option(help: "Logical date, YYYY-MM-DD (default: today).") var date: String?
        @Option(name: .customLong("param"), help: "NAME=VALUE, one of the DAG's parameters (repeatable).")
        var params: [String] = []
        @Flag(help: "Wait for the run to finish; exit 1 if it failed.") var wait = false
        @Option(help: "Seconds to wait with --wait.") var timeout: Double = 3600
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            let ctx = try Context()
            _ = try ctx.dag(dag)  // an unknown DAG is refused before any connection is made
            let logical = try date.map(parseDate) ?? parseDate(String(PostgresTimestamp.format(Date()).prefix(10)))
            // So is a malformed --param; a wrong value is refused (and audited) where the run is made.
            let given = try failing { try DAG.parseParams(params) }
            let ops = ctx.operations()
            let store = try ops.store
            let run = try failing { try ops.trigger(dag, logicalDate: logical, params: given) }  // wakes the scheduler
            if try failing({ try store.pausedDAGs() }).contains(dag) {
                FileHandle.standardError.write(
                    Data("etlctl: note: DAG '\(dag)' is paused; the run waits until: etlctl dags unpause \(dag)\n".utf8)
                )
            }
            guard wait else {
                if json {
                    Output.json(["dag": dag, "run": run, "state": "queued"])
                } else {
                    print("triggered \(dag) run \(run) for \(PostgresTimestamp.format(logical).prefix(10))")
                }
                return
            }
            try waitForRun(store: store, dag: dag, run: run, timeout: timeout, json: json)
        }
    }
}

private func setPaused(_ dag: String, _ paused: Bool) throws {
    let ctx = try Context()
    _ = try ctx.dag(dag)
    let ops = ctx.operations()
    try failing { try ops.setPaused(dag, paused) }
    print("\(dag) \(paused ? "paused" : "unpaused")")
}

/// Waits for a run to end; exit 0 only when it succeeded. On a terminal, a progress line on stderr
/// counts the run's tasks by state.
func waitForRun(store: MetadataStore, dag: String, run: Int64, timeout: Double, json: Bool) throws {
    let end = monotonicSeconds() + timeout
    let progress = isatty(2) != 0
    var lastDraw = 0.0
    defer { if progress && lastDraw > 0 { FileHandle.standardError.write(Data("\n".utf8)) } }
    while monotonicSeconds() < end {
        if progress && monotonicSeconds() - lastDraw >= 0.5, let tasks = try? store.taskRows(run: run) {
            lastDraw = monotonicSeconds()
            let done = tasks.filter { $0.state == "success" }.count
            let running = tasks.filter { $0.state == "running" }.count
            let failed = tasks.filter { TaskState(rawValue: $0.state)?.isFailure == true }.count
            let width = 20
            let filled = tasks.isEmpty ? 0 : width * done / tasks.count
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let failures = failed > 0 ? ", \(failed) failed" : ""
            FileHandle.standardError.write(
                Data("\r\(dag) run \(run) [\(bar)] \(done)/\(tasks.count) done, \(running) running\(failures)   ".utf8))
        }
        if let r = try failing({ try store.run(run) }), r.state.isFinished {
            if json {
                Output.json(["dag": dag, "run": run, "state": r.state.rawValue])
            } else {
                print("\(dag) run \(run): \(r.state.rawValue)")
            }
            if r.state == .failed { throw fail("\(dag) run \(run) failed. See: etlctl tasks list \(dag) --run \(run)") }
            return
        }
        sleepSeconds(0.1)
    }
    throw fail(
        "\(dag) run \(run) did not finish within \(Int(timeout)) s."
            + " Fix: check that a scheduler and workers run (etlctl workers)"
    )
}

extension String {
    /// nil for the empty string (a table cell shows "-" then).
    var nonEmpty: String? { isEmpty ? nil : self }
}
