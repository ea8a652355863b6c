import ETLSupport
import Metadata
import Orchestration

extension PipelineSchemas {
    /// The ingestion DAGs' first task, `create_tables`: the three schemas up to date with the DDL files.
    public static let createTables = "pipelines.create_tables"

    /// The operation behind `createTables`.
    ///
    /// Through the start-up migration (`Migrator.run`), which applies a DDL file only when it changed
    /// since it was last applied: even `CREATE INDEX IF NOT EXISTS` or `ALTER TABLE ... ADD COLUMN
    /// IF NOT EXISTS` lock their table, so applying unchanged files while another run's load writes
    /// those tables queued behind it or deadlocked with it.
    public static func createTablesOperation(_ s: PipelineSettings, _ env: Environment) -> TaskOperation {
        let schema = env["ETL_SCHEMA"] ?? "etl"
        return { ctx in
            try Migrator.run(ctx.pg, schema: schema, setup: setupScripts(s))
            ctx.log("schemas \(s.datalake), \(s.loads), \(s.datamart) are up to date with \(s.sourcesDir)/ddl")
        }
    }
}
