import ArgumentParser
import Foundation
import Orchestration
import Tasks

extension ETLCtl {
    struct ReportsCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reports",
            abstract: "The computed reports: when each was computed, and whether data it reads was corrected since.",
            subcommands: [List.self]
        )

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List computed reports, newest date first, with the corrections that make one out of date.",
                discussion: """
                    A report for D is out of date when an input it reads was loaded again after it was \
                    computed (a re-exported b2b day in its months, access-log lines on or before D loaded \
                    later). Recompute with a backfill:
                      etlctl dags backfill REPORT --from D --to D --rerun all
                    Example:
                      etlctl reports list --out-of-date
                    """
            )
            @Option(help: ArgumentHelp("Only this report (\(Reports.all.map(\.name).joined(separator: ", ")))."))
            var report: String?
            @Option(help: "Only this logical date, YYYY-MM-DD.") var date: String?
            @Flag(help: "Only the reports that are out of date.") var outOfDate = false
            @Option(help: "How many reports.") var limit: Int = 100
            @Flag(help: "Print JSON.") var json = false

            func run() throws {
                let s = try settings()
                let when = try date.map { try day($0) }
                let ops = try Context().operations()
                var rows = try failing {
                    try ops.computedReports(report: report, date: when, limit: outOfDate ? 100_000 : limit, settings: s)
                }
                if outOfDate { rows = Array(rows.filter { !$0.outOfDate.isEmpty }.prefix(limit)) }
                if json {
                    Output.encoded(rows)
                    return
                }
                if rows.isEmpty {
                    print(outOfDate ? "no report is out of date" : "no report has been computed yet: run a report DAG")
                    return
                }
                Output.table(
                    ["REPORT", "DATE", "COMPUTED (UTC)", "STATUS"],
                    rows.map { r in
                        [
                            r.report, r.date, r.computedAt,
                            r.outOfDate.isEmpty ? "current" : "OUT OF DATE: " + r.outOfDate.joined(separator: "; "),
                        ]
                    })
                let stale = rows.filter { !$0.outOfDate.isEmpty }
                if let first = stale.first {
                    print(
                        "\n\(stale.count) report(s) out of date. Recompute, e.g.: etlctl dags backfill \(first.report) "
                            + "--from \(first.date) --to \(first.date) --rerun all")
                }
            }
        }
    }
}
