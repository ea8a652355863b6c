import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Where the pipelines read and write, from the environment (all optional).
public struct PipelineSettings: Sendable {
    /// `ETL_SOURCES_DIR` (default `sources`): `ddl/*.sql` and `data/*.csv`.
    public var sourcesDir: String
    /// `ETL_B2B_DIR` (default `<sources>/data`): company, product, inventory and customer CSVs.
    public var b2bDir: String
    /// `ETL_GENERATED_DIR` (default `<sources>/generated`): what the generators write.
    public var generatedDir: String
    /// `ETL_B2B_EXPORT_DIR` (default `<generated>/exports`): the platform's daily exports, one folder
    /// `day=YYYY-MM-DD` per day (its orders and sales, and the dimension rows new or changed that day).
    public var exportDir: String
    /// `ETL_HISTORY_START` (default 2025-01-01): the platform's first day. The CSVs in `b2bDir` are
    /// the platform as it was on that day; the b2b load's first run loads every day from it.
    public var historyStart: Day
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
    /// `ETL_ORDERS` (default 20): orders the b2b DAG generates per day of the platform's history.
    public var orders: Int
    /// `ETL_WEBLOG_LINES` (default 50000): lines the weblog DAG generates per run.
    public var weblogLines: Int
    /// `ETL_SEED` (default 42): generators are deterministic under it.
    public var seed: UInt64
    /// `ETL_PIPELINE_SCHEDULE` (default `@daily`): the six DAGs' schedule; `none` for manual runs only.
    public var scheduleText: String

    public func schedule() throws -> Schedule {
        do { return try Schedule(scheduleText == "none" ? nil : scheduleText) } catch {
            throw ConfigError(
                variable: "ETL_PIPELINE_SCHEDULE", problem: "\"\(scheduleText)\" is not a schedule",
                fix: "use @daily, @hourly, @weekly, @monthly, @once, a 5-field cron expression, or none")
        }
    }

    public init(environment env: Environment) throws {
        sourcesDir = env["ETL_SOURCES_DIR"] ?? "sources"
        b2bDir = env["ETL_B2B_DIR"] ?? "\(sourcesDir)/data"
        generatedDir = env["ETL_GENERATED_DIR"] ?? "\(sourcesDir)/generated"
        exportDir = env["ETL_B2B_EXPORT_DIR"] ?? "\(generatedDir)/exports"
        let start = env["ETL_HISTORY_START"] ?? "2025-01-01"
        guard let first = Day(strict: start) else {
            throw ConfigError(
                variable: "ETL_HISTORY_START", problem: "\"\(start)\" is not a date",
                fix: "give the platform's first day as YYYY-MM-DD, e.g. 2025-01-01")
        }
        historyStart = first
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
        orders = try env.integer("ETL_ORDERS", default: 20, range: 0...PlatformHistory.maxOrdersPerDay)
        weblogLines = try env.integer("ETL_WEBLOG_LINES", default: 50_000, range: 0...10_000_000_000)
        seed = UInt64(try env.integer("ETL_SEED", default: 42, range: 0...Int.max))
        scheduleText = env["ETL_PIPELINE_SCHEDULE"] ?? "@daily"
    }

    static func identifier(_ env: Environment, _ name: String, _ fallback: String) throws -> String {
        let v = env[name] ?? fallback
        guard let f = v.unicodeScalars.first, f == "_" || ("a"..."z").contains(f),
            v.unicodeScalars.allSatisfy({ $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }),
            v.count <= 63
        else {
            throw ConfigError(
                variable: name, problem: "\"\(v)\" is not a plain schema name",
                fix: "use lower-case letters, digits and _")
        }
        return v
    }
}
