import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The pipelines' schemas (datalake, loads, datamart), defined once, by the DDL files in
/// `<ETL_SOURCES_DIR>/ddl`, and created at start-up by every program (scheduler, worker, webserver,
/// etlctl) in the same migration step as the metadata (`Migrator.run`'s `setup`), in the schemas
/// that `ETL_DATALAKE_SCHEMA`, `ETL_LOADS_SCHEMA` and `ETL_DATAMART_SCHEMA` name. Every statement in
/// those files is `CREATE ... IF NOT EXISTS`, so a database that already has the tables keeps (adopts)
/// them. Readers (pages, metrics, listings) can therefore rely on the tables existing.
public enum PipelineSchemas {
    /// The three DDL files and the schema each is applied in, in dependency order.
    public static func files(_ s: PipelineSettings) -> [(path: String, schema: String)] {
        [("datalake", s.datalake), ("loads", s.loads), ("datamart", s.datamart)].map {
            ("\(s.sourcesDir)/ddl/\($0.0).sql", $0.1)
        }
    }

    /// One schema's script: creates the schema and applies its DDL file (idempotent), setting
    /// `search_path` for the transaction only and putting the caller's back.
    static func script(path: String, schema: String) throws -> String {
        guard let sql = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError(
                variable: "ETL_SOURCES_DIR", problem: "cannot read \(path), which defines the \(schema) schema",
                fix: "run from the project folder, or set ETL_SOURCES_DIR to the folder holding ddl/ and data/")
        }
        return """
            SELECT set_config('etl.saved_search_path', current_setting('search_path'), true);
            CREATE SCHEMA IF NOT EXISTS \(schema);
            SET LOCAL search_path TO \(schema);
            \(sql)
            ;
            SELECT set_config('search_path', current_setting('etl.saved_search_path'), true);
            """
    }

    /// The start-up migration's scripts for the three schemas; the files are read when it runs.
    public static func setupScripts(_ s: PipelineSettings) -> [SetupScript] {
        files(s).map { file in
            SetupScript(name: "pipelines: \(file.path) in \(file.schema)") {
                try script(path: file.path, schema: file.schema)
            }
        }
    }

    /// Creates the three schemas and their tables now (the b2b, ip2geo and weblog DAGs'
    /// `create_tables` task; idempotent; serialized by an advisory lock so that concurrent
    /// workers do not race on CREATE TABLE IF NOT EXISTS).
    public static func ensure(_ pg: PostgresConnection, _ s: PipelineSettings) throws {
        let scripts = try files(s).map { try script(path: $0.path, schema: $0.schema) }
        try pg.transaction { tx in
            try tx.query("SELECT pg_advisory_xact_lock(727274)")  // the migrator's lock: one DDL writer at a time
            for sql in scripts { try tx.execute(script: sql) }
        }
    }
}
