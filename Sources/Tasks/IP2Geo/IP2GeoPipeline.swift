import ETLSupport
import Orchestration
import PostgresClient
import Workflow

/// The ip2geo pipeline: loads the IP-range-to-country table into the datalake.
public enum IP2GeoPipeline {
    public static let pipeline = Pipeline(name: "ip2geo", kind: .ingestion) { s in
        try DAG(
            "ip2geo", schedule: try s.schedule(), startDate: Pipeline.startDate, tags: ["ingestion"],
            maxActiveRuns: Pipeline.maxActiveRuns,
            tasks: [
                Pipeline.task("create_tables", PipelineSchemas.createTables),
                Pipeline.task("load_ip2geo", "ip2geo.load", ["create_tables"], pool: Pipeline.loadsPool),
            ])
    } operations: { s, env in
        [
            PipelineSchemas.createTables: PipelineSchemas.createTablesOperation(s, env),
            "ip2geo.load": { ctx in
                let meta = try ctx.ownConnection()  // for the load metadata
                defer { meta.close() }
                let r = try IP2Geo.load(
                    tx: ctx.pg, meta: meta, settings: s, runID: ctx.message.runID, logicalDate: ctx.message.logicalDate)
                ctx.log("ip2geo: read \(r.read), loaded \(r.loaded), rejected \(r.rejected)")
            },
        ]
    }
}
