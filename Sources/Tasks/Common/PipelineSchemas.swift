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
        [("datalake", s.datalake), ("loads", s.loads), ("datamart", s.datamart)].map { ("\(s.sourcesDir)/ddl/\($0.0).sql", $0.1) }
    }

    /// SQL scripts that create the schemas and apply their DDL (idempotent), for `Migrator.run`'s
    /// `setup`: each one sets `search_path` for the transaction only and puts the caller's back.
    public static func scripts(_ s: PipelineSettings) throws -> [String] {
        try files(s).map { file in
            guard let sql = try? String(contentsOfFile: file.path, encoding: .utf8) else {
                throw ConfigError(
                    variable: "ETL_SOURCES_DIR", problem: "cannot read \(file.path), which defines the \(file.schema) schema",
                    fix: "run from the project folder, or set ETL_SOURCES_DIR to the folder holding ddl/ and data/")
            }
            // `@S` in the setup scripts stands for the metadata schema; the DDL files never use it.
            return """
                SELECT set_config('etl.saved_search_path', current_setting('search_path'), true);
                CREATE SCHEMA IF NOT EXISTS \(file.schema);
                SET LOCAL search_path TO \(file.schema);
                \(sql)
                ;
                SELECT set_config('search_path', current_setting('etl.saved_search_path'), true);
                """
        }
    }

    /// Creates the three schemas and their tables now (the b2b, ip2geo and weblog DAGs'
    /// `create_tables` task; idempotent; serialized by an advisory lock so that concurrent
    /// workers do not race on CREATE TABLE IF NOT EXISTS).
    public static func ensure(_ pg: PostgresConnection, _ s: PipelineSettings) throws {
        let scripts = try scripts(s)
        try pg.transaction { tx in
            try tx.query("SELECT pg_advisory_xact_lock(727274)")  // the migrator's lock: one DDL writer at a time
            for sql in scripts { try tx.execute(script: sql) }
        }
    }
}
