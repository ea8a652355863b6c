import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// One access-log line made ready for the datalake: parsed, its user agent turned into a device,
/// its IP into a country. Used by the loader and by `etlctl weblog check`.
public struct WeblogEnricher {
    private var devices: DeviceCache
    let ranges: IPRangeTable
    private var lastSecond: Int64 = .min
    private var lastStamp = ""

    public init(rules: DeviceRules, ranges: IPRangeTable, cacheSize: Int) {
        self.ranges = ranges
        devices = DeviceCache(rules: rules, limit: cacheSize)
    }

    public struct Row {
        public var record: WeblogRecord
        public var device: String
        public var os: String
        public var country: String?
        public var timestamp: String
    }

    public mutating func enrich(_ line: UnsafeBufferPointer<UInt8>, cut: Bool) -> Result<Row, WeblogRejection> {
        if cut {
            return .failure(
                WeblogRejection(
                    reason: "line too long: over \(line.count) bytes, the limit is \(CombinedLogParser.maxLineBytes)"))
        }
        let record: WeblogRecord
        do { record = try CombinedLogParser.parse(line) } catch { return .failure(error) }
        var device = "Unknown"
        var os = "Other"
        if let ua = record.userAgent {
            let d = devices.device(ua)
            device = d.label
            os = d.os
        }
        let country = IPRangeTable.ipv4(record.clientIP).flatMap { ranges.country(of: $0)?.code }
        if record.timestamp != lastSecond {
            lastSecond = record.timestamp
            lastStamp = PostgresTimestamp.format(Date(timeIntervalSince1970: Double(record.timestamp)))
        }
        return .success(Row(record: record, device: device, os: os, country: country, timestamp: lastStamp))
    }

    /// The IP ranges: the datalake's ip2geo table when it has rows, else the CSV the ip2geo DAG loads.
    public static func ranges(pg: PostgresConnection?, settings s: PipelineSettings) throws -> IPRangeTable {
        if let pg, let n = try? pg.query("SELECT count(*) FROM \(s.datalake).ip2geo").rows.first?.decode(Int64.self, 0),
            n > 0
        {
            var table = IPRangeTable()
            for r in try pg.query(
                """
                SELECT ip_from, ip_to, country_code, country_name FROM \(s.datalake).ip2geo
                WHERE country_code <> '-' ORDER BY ip_from
                """
            ).rows {
                table.append(
                    from: UInt32(try r.decode(Int64.self, 0)), to: UInt32(try r.decode(Int64.self, 1)),
                    code: try r.decode(String.self, 2), name: try r.decode(String.self, 3))
            }
            return table
        }
        let path = "\(s.sourcesDir)/data/ip2geo.csv"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw PipelineError(
                "cannot read \(path) and the ip2geo table is empty:"
                    + " run the ip2geo DAG or build the file with scripts/build-ip2geo"
            )
        }
        return try IPRangeTable(csv: text, file: path)
    }
}
