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
    struct Summary: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "What the pipeline DAGs did for a date: each run's state and duration, rows loaded and rejected, "
                + "the reports.",
            discussion: "Example:\n  etlctl summary --date 2024-06-01"
        )
        @Option(help: "Logical date, YYYY-MM-DD (default: today).") var date: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let when = try day(date)
            let ops = try Context().operations()
            let s = try settings()
            let summary = try failing { try ops.summary(day: when, settings: s) }
            if json {
                Output.encoded(summary)
                return
            }
            print("DAG runs for \(when):")
            Output.table(
                ["DAG", "RUN", "STATE", "DURATION"],
                summary.runs.map { r in
                    [
                        r.dag, r.run.map(String.init) ?? "-", r.state,
                        r.seconds.map { String(format: "%.1fs", $0) } ?? "-",
                    ]
                })
            print(
                "\nFinished loads of these runs (rows read = loaded + rejected), and loads that broke "
                    + "(retried attempts) or still run:"
            )
            Output.table(
                ["PIPELINE", "FINISHED", "READ", "LOADED", "REJECTED", "BROKEN", "RUNNING"],
                summary.loads.map { l in
                    [
                        l.pipeline, "\(l.loads)", "\(l.read)", "\(l.loaded)", "\(l.rejected)", "\(l.broken)",
                        "\(l.running)",
                    ]
                })
            print("\nReports:")
            let computed = (try? ops.computedReports(report: nil, date: when, limit: 100, settings: s)) ?? []
            for r in summary.reports {
                let status = computed.first { $0.report == r.report }.map { c in
                    c.outOfDate.isEmpty
                        ? "  (computed \(c.computedAt) UTC)"
                        : "  (OUT OF DATE: \(c.outOfDate.joined(separator: "; ")); recompute with etlctl dags backfill "
                            + "\(r.report) --from \(when) --to \(when) --rerun all)"
                }
                print("  \(r.report): \(r.path)\(r.exists ? "" : "  (not written)")\(status ?? "")")
            }
            if let marks = try? ops.watermarks(settings: s) {
                let text = marks.map { "\($0.name) through \($0.through ?? "nothing yet")" }
                print("\nSources complete (watermarks): \(text.joined(separator: ", "))")
            }
        }
    }
}
