import Orchestration
import Workflow

extension Pipeline {
    /// A report's pipeline: a DAG named as the report, tagged `report`, waiting for the report's
    /// upstream DAGs (same logical date), with one task, `report`, that runs operation
    /// `report.<name>`: the report's rows for the logical date into its datamart table and CSV.
    public static func report(_ report: Reports.Report) -> Pipeline {
        let operation = "report.\(report.name)"
        return Pipeline(
            name: report.name, kind: .report, report: report, inputs: { s in Watermarks.check(report, s) },
            dag: { s in
                try DAG(
                    report.name, schedule: try s.schedule(), startDate: startDate, tags: ["report"],
                    upstreamDAGs: report.upstreamDAGs, maxActiveRuns: maxActiveRuns,
                    params: report.top.map { [topParam($0)] } ?? [],
                    tasks: [task("report", operation, args: ["report": report.name], pool: reportsPool)])
            },
            operations: { s, _ in
                [
                    operation: { ctx in
                        let day = try logicalDay(ctx)
                        if let top = try ctx.param("top").flatMap({ Int($0) }), top != report.top {
                            // Another length: a report of its own, in its own file; the datamart's
                            // ranking for the date stays as it is.
                            let out = try Reports.runVariant(report, date: day, top: top, tx: ctx.pg, settings: s)
                            ctx.log(
                                "\(report.name) top \(top): \(out.rows.count) rows; \(out.path) is written at the end")
                            ctx.afterCommit { _ in try Reports.writeVariant(report, out) }
                            return
                        }
                        let out = try Reports.run(report, date: day, tx: ctx.pg, settings: s)
                        ctx.log(
                            "\(report.name): \(out.rows.count) rows into \(s.datamart).\(report.table); \(out.path) "
                                + "is written once they are committed")
                        // Only a committed computation reaches the file (a superseded runner's never does).
                        ctx.afterCommit { pg in try Reports.writeCSV(report, date: day, pg: pg, settings: s) }
                    }
                ]
            })
    }

    /// A ranking's length as a run parameter: part of what the report is (another length is another
    /// report, in `date=<D>/top=<N>/`), so any run may set it.
    static func topParam(_ length: Int) -> DAGParam {
        DAGParam(
            "top", .integer(1...100), default: String(length), effect: .definesOutput,
            help: "how many rows the ranking lists; another value than \(length) writes date=<D>/top=<N>/report.csv "
                + "and leaves the datamart's ranking as it is")
    }
}
