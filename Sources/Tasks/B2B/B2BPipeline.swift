import ETLSupport
import Orchestration
import PostgresClient
import Workflow

/// The b2b pipeline: generates the day's orders and sales, then loads the platform's tables
/// (companies, products, catalogs, customers, orders, sales) into the datalake.
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
            PipelineSchemas.createTables: PipelineSchemas.createTablesOperation(s),
            "b2b.generate_orders": { ctx in
                guard s.orders > 0 else {
                    ctx.log("ETL_ORDERS=0: no orders generated; loading \(s.generatedDir)/orders.csv as it is")
                    return
                }
                let day = try Pipeline.logicalDay(ctx)
                let r = try OrdersGenerator.generate(
                    orders: s.orders, date: day, seed: s.seed &+ UInt64(day.daysSince1970),
                    b2bDir: s.b2bDir, outDir: s.generatedDir)
                ctx.log("generated \(r.orders) orders with \(r.lines) sales lines into \(s.generatedDir)")
            },
            "b2b.load": { ctx in
                let meta = try Pipeline.ownConnection(env)  // for the load metadata
                defer { meta.close() }
                let results = try B2B.load(
                    tx: ctx.pg, meta: meta, settings: s, runID: ctx.message.runID,
                    logicalDate: ctx.message.logicalDate, log: ctx.log)
                ctx.log("b2b loaded: \(results.map { "\($0.table) \($0.loaded)/\($0.read)" }.joined(separator: ", "))")
            },
        ]
    }
}
