import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

@testable import Tasks

/// Folders and schemas of their own for one pipeline test: the repo's DDL, a temporary folder for
/// generated files, logs and reports, and datalake/loads/datamart schemas with a unique suffix.
public final class PipelineFixture {
    public let dir: URL
    public let tag: String
    public let values: [String: String]
    public let settings: PipelineSettings
    public let pg: PostgresConnection?
    /// The lab whose servers hold the fixture's schemas (nil: the test servers).
    public let lab: NetworkLab?

    /// `ownB2B`: the B2B CSVs are read from `<fixture>/b2b` (written by the test).
    public init(
        name: String = #function, ownB2B: Bool = false, extra: [String: String] = [:], database: Bool = true,
        lab: NetworkLab? = nil
    ) throws {
        self.lab = lab
        tag =
            String(name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(20)) + "_"
            + TestServices.randomSuffix()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-pipe-\(tag)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let sources = TestServices.repoRoot.appendingPathComponent("sources").path
        var v: [String: String] = [
            "ETL_SOURCES_DIR": sources,
            "ETL_B2B_DIR": ownB2B ? dir.appendingPathComponent("b2b").path : "\(sources)/data",
            "ETL_GENERATED_DIR": dir.appendingPathComponent("generated").path,
            "ETL_WEBLOG_DIR": dir.appendingPathComponent("apache-logs").path,
            "ETL_REPORTS_DIR": dir.appendingPathComponent("reports").path,
            "ETL_DATALAKE_SCHEMA": "dl_\(tag)",
            "ETL_LOADS_SCHEMA": "ld_\(tag)",
            "ETL_DATAMART_SCHEMA": "dm_\(tag)",
        ]
        // The hand-worked platform's history starts on its first order's day.
        if ownB2B { v["ETL_HISTORY_START"] = HandWorkedB2B.historyStart }
        v.merge(extra) { _, x in x }
        values = v
        settings = try PipelineSettings(environment: Environment(v))
        if database {
            let servers = lab.map { Environment($0.environment) }
            let conn = try PostgresConnection(config: PostgresConfig(environment: servers ?? TestServices.environment))
            try PipelineSchemas.ensure(conn, settings)
            pg = conn
        } else {
            pg = nil
        }
    }

    public var path: String { dir.path }

    /// Writes `text` to `name` under the fixture folder and returns its path.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    public func count(_ sql: String, _ params: [any PostgresEncodable] = []) throws -> Int64 {
        try pg!.query(sql, params).rows[0].decode(Int64.self, 0)
    }

    /// A table's row count and a checksum of its sorted rows ("schema.table"), to compare two loads.
    public func digest(_ table: String) throws -> String {
        try pg!.query(
            """
            SELECT count(*) || ' ' || coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '-')
            FROM (SELECT t::text AS r FROM \(table) t) x
            """
        ).rows[0].decode(String.self, 0)
    }

    /// The digests of the b2b tables of the datalake.
    public func b2bDigests() throws -> [String: String] {
        var out: [String: String] = [:]
        for t in ["company", "product", "inventory", "customer", "orders", "sales"] {
            out[t] = try digest("\(settings.datalake).\(t)")
        }
        return out
    }

    deinit {
        if let pg {
            for s in [settings.datalake, settings.loads, settings.datamart] {
                _ = try? pg.execute(script: "DROP SCHEMA IF EXISTS \(s) CASCADE")
            }
            pg.close()
        }
        try? FileManager.default.removeItem(at: dir)
    }
}
