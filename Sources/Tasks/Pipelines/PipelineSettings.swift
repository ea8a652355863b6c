import Foundation
import Shared

/// Where the pipelines read and write, from the environment (all optional).
public struct PipelineSettings: Sendable {
    /// `ETL_SOURCES_DIR` (default `sources`): `ddl/*.sql` and `data/*.csv`.
    public var sourcesDir: String
    /// `ETL_B2B_DIR` (default `<sources>/data`): company, product, inventory and customer CSVs.
    public var b2bDir: String
    /// `ETL_GENERATED_DIR` (default `<sources>/generated`): generated orders.csv and sales.csv.
    public var generatedDir: String
    /// `ETL_REPORTS_DIR` (default `reports`).
    public var reportsDir: String
    /// `ETL_WEBLOG_DIR` (default `apache-logs`).
    public var weblogDir: String
    /// `ETL_DATALAKE_SCHEMA`, `ETL_DATAMART_SCHEMA`, `ETL_LOADS_SCHEMA` (defaults datalake, datamart, loads).
    public var datalake: String
    public var datamart: String
    public var loads: String
    /// `ETL_UAP_REGEXES`: uap-core's regexes.yaml.
    public var uapRegexes: String
    /// `ETL_WEBLOG_PARTS` (default 4): parallel load tasks of the weblog DAG.
    public var weblogParts: Int
    /// `ETL_WEBLOG_RANGE_MB` (default 8): a file is split into byte ranges of about this size.
    public var rangeBytes: Int
    /// `ETL_WEBLOG_CHUNK_LINES` (default 20000): lines per committed chunk.
    public var chunkLines: Int
    /// `ETL_DEVICE_CACHE` (default 50000): distinct user agents remembered per loader (0 = none).
    public var deviceCache: Int
    /// `ETL_ORDERS` (default 5000): orders the b2b DAG generates.
    public var orders: Int
    /// `ETL_WEBLOG_LINES` (default 50000): lines the weblog DAG generates per run.
    public var weblogLines: Int
    /// `ETL_SEED` (default 42): generators are deterministic under it.
    public var seed: UInt64
    /// `ETL_PIPELINE_SCHEDULE` (default `@daily`): the six DAGs' schedule; `none` for manual runs only.
    public var scheduleText: String

    public func schedule() throws -> Schedule {
        do { return try Schedule(scheduleText == "none" ? nil : scheduleText) } catch {
            throw ConfigError(variable: "ETL_PIPELINE_SCHEDULE", problem: "\"\(scheduleText)\" is not a schedule",
                              fix: "use @daily, @hourly, @weekly, @monthly, @once, a 5-field cron expression, or none")
        }
    }

    public init(environment env: Environment) throws {
        sourcesDir = env["ETL_SOURCES_DIR"] ?? "sources"
        b2bDir = env["ETL_B2B_DIR"] ?? "\(sourcesDir)/data"
        generatedDir = env["ETL_GENERATED_DIR"] ?? "\(sourcesDir)/generated"
        reportsDir = env["ETL_REPORTS_DIR"] ?? "reports"
        weblogDir = env["ETL_WEBLOG_DIR"] ?? "apache-logs"
        datalake = try Self.identifier(env, "ETL_DATALAKE_SCHEMA", "datalake")
        datamart = try Self.identifier(env, "ETL_DATAMART_SCHEMA", "datamart")
        loads = try Self.identifier(env, "ETL_LOADS_SCHEMA", "loads")
        uapRegexes = env["ETL_UAP_REGEXES"] ?? DeviceRules.defaultPath
        weblogParts = try env.integer("ETL_WEBLOG_PARTS", default: 4, range: 1...256)
        rangeBytes = try env.integer("ETL_WEBLOG_RANGE_MB", default: 8, range: 1...4096) << 20
        chunkLines = try env.integer("ETL_WEBLOG_CHUNK_LINES", default: 20_000, range: 1...10_000_000)
        deviceCache = try env.integer("ETL_DEVICE_CACHE", default: 50_000, range: 0...10_000_000)
        orders = try env.integer("ETL_ORDERS", default: 5_000, range: 0...1_000_000_000)
        weblogLines = try env.integer("ETL_WEBLOG_LINES", default: 50_000, range: 0...10_000_000_000)
        seed = UInt64(try env.integer("ETL_SEED", default: 42, range: 0...Int.max))
        scheduleText = env["ETL_PIPELINE_SCHEDULE"] ?? "@daily"
    }

    static func identifier(_ env: Environment, _ name: String, _ fallback: String) throws -> String {
        let v = env[name] ?? fallback
        guard let f = v.unicodeScalars.first, f == "_" || ("a"..."z").contains(f),
              v.unicodeScalars.allSatisfy({ $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }), v.count <= 63 else {
            throw ConfigError(variable: name, problem: "\"\(v)\" is not a plain schema name", fix: "use lower-case letters, digits and _")
        }
        return v
    }
}

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

/// A pipeline failure with a message that says what to do.
public struct PipelineError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A calendar day (UTC), the unit of logical dates and report partitions.
public struct Day: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int
    public let month: Int
    public let day: Int

    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    public init(daysSince1970 days: Int) {
        let (y, m, d) = CivilDate.fromDays(days)
        self.init(year: y, month: m, day: d)
    }

    /// From `YYYY-MM-DD` (a real calendar day: not 2024-02-30), or the date part of a timestamp like a
    /// logical date.
    public init?(_ text: String) {
        let date = String(text.prefix(10))
        guard text.count >= 10, CivilDateCheck.date(date), let d = PostgresTimestamp.parse(date) else { return nil }
        self.init(daysSince1970: Int((d.timeIntervalSince1970 / 86_400).rounded(.down)))
    }

    /// Exactly `YYYY-MM-DD` and a real calendar day (what a user types for a date), else nil.
    public init?(strict text: String) {
        guard text.count == 10 else { return nil }
        self.init(text)
    }

    public static func today() -> Day { Day(daysSince1970: Int(Date().timeIntervalSince1970 / 86_400)) }

    public var daysSince1970: Int { CivilDate.toDays(year: year, month: month, day: day) }
    public var epochSeconds: Int64 { Int64(daysSince1970) * 86_400 }
    public var description: String {
        "\(year)-\(month < 10 ? "0" : "")\(month)-\(day < 10 ? "0" : "")\(day)"
    }
    /// The first day of the month `n` months from this day's month (negative for earlier).
    public func monthStart(offset n: Int) -> Day {
        let m = year * 12 + (month - 1) + n
        return Day(year: m / 12, month: m % 12 + 1, day: 1)
    }
    public static func < (a: Day, b: Day) -> Bool { a.daysSince1970 < b.daysSince1970 }
}
