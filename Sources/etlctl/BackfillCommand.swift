import ArgumentParser
import ETLSupport
import Foundation
import Metadata
import Orchestration
import Workflow

extension Dags {
    struct Backfill: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a DAG for a range of logical dates (and, for a report, its upstream DAGs).",
            discussion: """
                Makes the missing runs in date order; the scheduler runs them within each DAG's max active \
                runs, oldest date first. Dates that have a run already are kept (--rerun none), their \
                failed tasks run again (--rerun failed) or every task (--rerun all); a run still going is \
                kept. On a terminal a \
                progress line counts runs done, running and failed, with the time left. Exits 0 only if \
                every run of the range succeeded. Example:
                  etlctl dags backfill popular-products --from 2024-05-01 --to 2024-05-07 --rerun failed
                """
        )
        @Argument(help: "The DAG id.") var dag: String
        @Option(help: "The first logical date, YYYY-MM-DD.") var from: String
        @Option(help: "The last logical date, YYYY-MM-DD (included).") var to: String
        @Option(help: "For dates with a run already: none, failed or all.") var rerun: String = "none"
        @Flag(help: "Print what it would do, and do nothing.") var dryRun = false
        @Flag(help: "Return once the runs are made, without waiting for them.") var noWait = false
        @Option(help: "Seconds to wait for the runs.") var timeout: Double = 86_400

        func validate() throws {
            guard OperatorActions.Rerun(rawValue: rerun) != nil else {
                throw ValidationError("--rerun is none, failed or all, not '\(rerun)'")
            }
        }

        func run() throws {
            let ctx = try Context()
            _ = try ctx.dag(dag)
            let (first, last) = (try parseDate(from), try parseDate(to))
            let mode = OperatorActions.Rerun(rawValue: rerun) ?? .none
            let ops = ctx.operations()
            let plan = try failing { try ops.backfillPlan(dag, from: first, to: last, rerun: mode) }
            let day = { (d: Date) in String(PostgresTimestamp.format(d).prefix(10)) }
            if dryRun {
                Output.table(
                    ["DATE", "DAG", "ACTION", "RUN", "STATE"],
                    plan.map {
                        [
                            day($0.logicalDate), $0.dag, $0.action.rawValue, $0.run.map(String.init) ?? "-",
                            $0.state?.rawValue ?? "-",
                        ]
                    })
                return
            }
            let done = try failing { try ops.backfill(plan, rerun: mode) }
            let paused = try failing { try ops.store.pausedDAGs() }.intersection(plan.map(\.dag))
            if !paused.isEmpty {
                FileHandle.standardError.write(
                    Data(
                        ("etlctl: note: \(paused.sorted().joined(separator: ", ")) paused; their runs wait until "
                            + "etlctl dags unpause\n").utf8))
            }
            let counts = Dictionary(grouping: done, by: \.action).mapValues(\.count)
            print(
                "backfill of \(dag) from \(day(first)) to \(day(last)): \(counts[.create] ?? 0) run(s) made, "
                    + "\(counts[.rerun] ?? 0) to run again, \(counts[.keep] ?? 0) kept")
            if noWait { return }
            try waitForBackfill(try ops.store, runs: done.compactMap(\.run), timeout: timeout)
        }
    }
}

/// Waits for every run of a backfill; a progress line on a terminal; exit 1 if one failed.
func waitForBackfill(_ store: MetadataStore, runs: [Int64], timeout: Double) throws {
    let start = monotonicSeconds()
    let progress = isatty(2) != 0
    var lastDraw = 0.0
    defer { if progress && lastDraw > 0 { FileHandle.standardError.write(Data("\n".utf8)) } }
    while true {
        let known = try failing { try store.states(ofRuns: runs) }
        let states = runs.map { known[$0] ?? .failed }
        let finished = states.filter(\.isFinished).count
        let failed = states.filter { $0 == .failed }.count
        if progress && monotonicSeconds() - lastDraw >= 0.5 {
            lastDraw = monotonicSeconds()
            let running = states.filter { $0 == .running }.count
            let elapsed = monotonicSeconds() - start
            let left =
                finished > 0 ? " about \(Int(elapsed / Double(finished) * Double(runs.count - finished))) s left" : ""
            FileHandle.standardError.write(
                Data(
                    "\rruns: \(finished)/\(runs.count) done, \(running) running, \(failed) failed;\(left)    ".utf8))
        }
        if finished == runs.count {
            if failed > 0 { throw fail("\(failed) of \(runs.count) runs failed. See: etlctl runs list") }
            print("all \(runs.count) runs succeeded")
            return
        }
        guard monotonicSeconds() - start < timeout else {
            throw fail(
                "\(runs.count - finished) runs did not finish within \(Int(timeout)) s."
                    + " Fix: check that a scheduler and workers run (etlctl workers)")
        }
        sleepSeconds(0.5)
    }
}
