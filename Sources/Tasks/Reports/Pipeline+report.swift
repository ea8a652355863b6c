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
                    tasks: [task("report", operation, args: ["report": report.name], pool: reportsPool)])
            },
            operations: { s, _ in
                [
                    operation: { ctx in
                        let day = try logicalDay(ctx)
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
}
