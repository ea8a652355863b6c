import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Loads `sources/data/ip2geo.csv` (IP2Location LITE DB1 shape, no header:
/// `"ip_from","ip_to","country_code","country_name"`) into the datalake, replacing the table in
/// one transaction. Bad lines (field count, numbers, order, overlap, country code) are rejected
/// with their line number.
public enum IP2Geo {
    public struct Result: Sendable {
        public let read: Int64
        public let loaded: Int64
        public let rejected: Int64
    }

    public static func load(
        tx: PostgresConnection, meta: PostgresConnection, settings s: PipelineSettings,
        runID: Int64?, logicalDate: String?
    ) throws -> Result {
        let path = "\(s.sourcesDir)/data/ip2geo.csv"
        guard FileManager.default.fileExists(atPath: path) else {
            throw PipelineError(
                "\(path) does not exist: build it with scripts/build-ip2geo (from tor-geoipdb and iso-codes)")
        }
        let loads = LoadLog(pg: meta, schema: s.loads)
        var id: Int64 = -1
        do {
            var read: Int64 = 0
            var loaded: Int64 = 0
            var rejects: [Rejection] = []
            var lastEnd: Int64 = -1
            let bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            try tx.transaction { tx in
                try loads.takeOver(pipeline: "ip2geo", tx: tx)
                id = try loads.begin(pipeline: "ip2geo", source: path, runID: runID, logicalDate: logicalDate)
                try recordNames(load: nil, tx: tx, s, baseline: true)
                try tx.execute(script: "TRUNCATE \(s.datalake).ip2geo")
                try tx.copyIn("COPY \(s.datalake).ip2geo (ip_from, ip_to, country_code, country_name) FROM STDIN") {
                    w in
                    var number: Int64 = 0
                    try LineReader(path: path).forEachLine { bytes, _, _ in
                        number += 1
                        let text = String(decoding: LineReader.withoutLineBreak(bytes), as: UTF8.self)
                        if text.isEmpty { return true }
                        read += 1
                        func reject(_ why: String) { rejects.append(Rejection(line: number, raw: text, reason: why)) }
                        guard let f = CSVLine.split(Substring(text)) else {
                            reject("a quoted field is never closed")
                            return true
                        }
                        guard f.count == 4 else {
                            reject("expected 4 fields (ip_from, ip_to, country_code, country_name), found \(f.count)")
                            return true
                        }
                        guard let lo = Int64(f[0]), let hi = Int64(f[1]), lo >= 0, hi <= 4_294_967_295, lo <= hi else {
                            reject("ip_from and ip_to must be IPv4 numbers (0…4294967295) with ip_from <= ip_to")
                            return true
                        }
                        guard lo > lastEnd else {
                            reject(
                                "range \(lo)-\(hi) overlaps or precedes the previous range (ending \(lastEnd));"
                                    + " sort the file by ip_from"
                            )
                            return true
                        }
                        let code = f[2]
                        guard code == "-" || (code.count == 2 && code.allSatisfy { $0.isASCII && $0.isUppercase })
                        else {
                            reject("country_code \"\(code)\" is not two capital letters or -")
                            return true
                        }
                        lastEnd = hi
                        loaded += 1
                        try w.writeRow([String(lo), String(hi), code, f[3]])
                        return true
                    }
                }
                try Rejection.store(rejects, load: id, source: path, schema: s.loads, on: tx)
                try recordNames(load: id, tx: tx, s)
                try loads.finish(
                    id, read: read, loaded: loaded, rejected: Int64(rejects.count), bytes: Int64(bytes), on: tx)
            }
            return Result(read: read, loaded: loaded, rejected: Int64(rejects.count))
        } catch {
            if id >= 0 { try? loads.broke(id, error: "\(error)") }
            throw error
        }
    }

    /// A new row in `loads.ip2geo_names` when the table's country names differ from the last one's
    /// (reports that name countries from it and were computed before are then out of date).
    /// `baseline`: before the table is replaced, the names it holds, only when none were recorded yet
    /// (a datalake from before `ip2geo_names`, whose reports read these names), so that the load
    /// after it is compared with them.
    static func recordNames(
        load: Int64?, tx: PostgresConnection, _ s: PipelineSettings, baseline: Bool = false
    )
        throws
    {
        let onlyFirst =
            baseline
            ? "AND NOT EXISTS (SELECT 1 FROM \(s.loads).ip2geo_names) AND EXISTS (SELECT 1 FROM \(s.datalake).ip2geo)"
            : ""
        try tx.query(
            """
            WITH now AS (
                SELECT coalesce(md5(string_agg(country_code || ',' || country_name, E'\\n'
                                               ORDER BY country_code COLLATE "C", country_name COLLATE "C")),
                                '-') AS checksum,
                       count(*) AS countries
                FROM (SELECT DISTINCT country_code, country_name FROM \(s.datalake).ip2geo) p
            )
            INSERT INTO \(s.loads).ip2geo_names (checksum, countries, load_id)
            SELECT now.checksum, now.countries, $1 FROM now
            WHERE now.checksum IS DISTINCT FROM
                  (SELECT checksum FROM \(s.loads).ip2geo_names ORDER BY id DESC LIMIT 1) \(onlyFirst)
            """, [load.map(String.init)])
    }
}
