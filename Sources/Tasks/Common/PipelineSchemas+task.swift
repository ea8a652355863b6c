import Orchestration

extension PipelineSchemas {
    /// The ingestion DAGs' first task, `create_tables`: the three schemas up to date with the DDL files.
    public static let createTables = "pipelines.create_tables"

    /// The operation behind `createTables`.
    public static func createTablesOperation(_ s: PipelineSettings) -> TaskOperation {
        { ctx in
            try ensure(ctx.pg, s)
            ctx.log("schemas \(s.datalake), \(s.loads), \(s.datamart) are up to date with \(s.sourcesDir)/ddl")
        }
    }
}
