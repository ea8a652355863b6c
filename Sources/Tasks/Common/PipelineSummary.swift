import ETLSupport
import Foundation
import Metadata
import PostgresClient

/// What the pipeline DAGs did for a logical date (`etlctl summary`): each DAG's run and its state and
/// duration, the finished, broken and running loads of those runs with their rows, and where the
/// three reports are.
public struct PipelineSummary: Encodable, Sendable {
    public struct RunLine: Encodable, Sendable {
        public let dag: String
        public let run: Int64?
        public let state: String
        public let seconds: Double?
    }

    public struct LoadLine: Encodable, Sendable {
        public let pipeline: String
        public let loads: Int64
        public let read: Int64
        public let loaded: Int64
        public let rejected: Int64
        public let broken: Int64
        public let running: Int64
    }

    public struct ReportLine: Encodable, Sendable {
        public let report: String
        public let path: String
        public let exists: Bool
    }

    public let date: String
    public let runs: [RunLine]
    public let loads: [LoadLine]
    public let reports: [ReportLine]

    /// Reads it from the metadata (`store`) and the loads schema (`pg`, migrated).
    public static func read(
        day: Day, store: MetadataStore, pg: PostgresConnection, settings s: PipelineSettings
    ) throws -> PipelineSummary {
        let prefix = day.description
        var runs: [RunLine] = []
        var ids: [Int64] = []
        for dag in PipelineDAGs.names {
            let r = try store.runRows(dag: dag, limit: 1000).first {
                PostgresTimestamp.format($0.logicalDate).hasPrefix(prefix) && $0.variant.isEmpty
            }
            if let r { ids.append(r.id) }
            runs.append(
                RunLine(
                    dag: dag, run: r?.id, state: r?.state.rawValue ?? "no run",
                    seconds: r.flatMap { run in run.startedAt.map { (run.endedAt ?? Date()).timeIntervalSince($0) } }))
        }
        var loads: [LoadLine] = []
        if !ids.isEmpty {
            loads = try pg.query(
                """
                SELECT pipeline, count(*) FILTER (WHERE state = 'finished'),
                       coalesce(sum(rows_read) FILTER (WHERE state = 'finished'), 0)::bigint,
                       coalesce(sum(rows_loaded) FILTER (WHERE state = 'finished'), 0)::bigint,
                       coalesce(sum(rows_rejected) FILTER (WHERE state = 'finished'), 0)::bigint,
                       count(*) FILTER (WHERE state = 'broken'), count(*) FILTER (WHERE state = 'running')
                FROM \(s.loads).load WHERE run_id = ANY($1::bigint[]) GROUP BY pipeline ORDER BY pipeline
                """, ["{\(ids.map(String.init).joined(separator: ","))}"]
            ).rows.map { r in
                LoadLine(
                    pipeline: try r.decode(String.self, 0), loads: try r.decode(Int64.self, 1),
                    read: try r.decode(Int64.self, 2),
                    loaded: try r.decode(Int64.self, 3), rejected: try r.decode(Int64.self, 4),
                    broken: try r.decode(Int64.self, 5),
                    running: try r.decode(Int64.self, 6))
            }
        }
        let reports = Reports.all.map { r in
            let path = Reports.csvPath(r, date: day, settings: s)
            return ReportLine(report: r.name, path: path, exists: FileManager.default.fileExists(atPath: path))
        }
        return PipelineSummary(date: prefix, runs: runs, loads: loads, reports: reports)
    }
}
