import ETLSupport
import Orchestration
import PostgresClient
import Workflow

/// The b2b pipeline: exports the platform's days up to the logical date (generated, deterministic),
/// then loads the days not loaded yet into the datalake (the initial load on the first run).
public enum B2BPipeline {
    public static let pipeline = Pipeline(name: "b2b", kind: .ingestion) { s in
        try DAG(
            "b2b", schedule: try s.schedule(), startDate: Pipeline.startDate, tags: ["ingestion"],
            maxActiveRuns: Pipeline.maxActiveRuns,
            tasks: [
                Pipeline.task("create_tables", PipelineSchemas.createTables),
                Pipeline.task("generate_orders", "b2b.generate_orders", ["create_tables"]),
                Pipeline.task("load_tables", "b2b.load", ["generate_orders"], pool: Pipeline.loadsPool),
            ])
    } operations: { s, env in
        [
            PipelineSchemas.createTables: PipelineSchemas.createTablesOperation(s, env),
            "b2b.generate_orders": { ctx in
                guard s.orders > 0 else {
                    ctx.log("ETL_ORDERS=0: no export generated; loading the exports in \(s.exportDir) as they are")
                    return
                }
                let day = try Pipeline.logicalDay(ctx)
                let r = try PlatformHistory.export(
                    upTo: day, ordersPerDay: s.orders, seed: s.seed, settings: s,
                    loaded: try B2BLoad.loadedDays(pg: ctx.pg, s))
                if r.archived > 0 {
                    ctx.log(
                        "\(r.archived) loaded day(s) have no export folder (archived): kept as loaded, "
                            + "not exported again"
                    )
                }
                if let first = r.first, let last = r.last {
                    ctx.log(
                        "exported \(r.days) day(s), \(first)..\(last): \(r.orders) orders with \(r.lines) sales lines "
                            + "into \(s.exportDir)")
                } else {
                    ctx.log("every day from \(s.historyStart) to \(day) is exported already in \(s.exportDir)")
                }
            },
            "b2b.load": { ctx in
                let pg = try ctx.ownConnection()  // each day commits with its ledger row
                defer { pg.close() }
                let r = try B2BLoad.load(
                    pg: pg, settings: s, runID: ctx.message.runID, upTo: try Pipeline.logicalDay(ctx), log: ctx.log,
                    checkDeadline: ctx.checkDeadline)
                ctx.log(
                    "b2b loaded: "
                        + r.tables.map {
                            "\($0.table) \($0.loaded)/\($0.read) (+\($0.inserted) ~\($0.updated) =\($0.unchanged) "
                                + "-\($0.removed))"
                        }.joined(separator: ", "))
            },
        ]
    }
}
