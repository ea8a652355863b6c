import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The load metadata as operators read it (`etlctl loads`, the web UI's loads page and API).
public enum LoadQueries {
    public struct Load: Codable, Sendable {
        public let id: Int64
        public let pipeline: String
        public let source: String
        public let state: String
        public let startedAt: Date?
        public let brokeAt: Date?
        public let finishedAt: Date?
        public let rowsRead: Int64
        public let rowsLoaded: Int64
        public let rowsRejected: Int64
        public let bytes: Int64
        public let error: String
        enum CodingKeys: String, CodingKey {
            case id, pipeline, source, state
            case startedAt = "started_at"
            case brokeAt = "broke_at"
            case finishedAt = "finished_at"
            case rowsRead = "rows_read"
            case rowsLoaded = "rows_loaded"
            case rowsRejected = "rows_rejected"
            case bytes, error
        }
    }

    /// What an empty list of loads means and what will fill it (etlctl and the web UI say the same).
    public static func emptyMessage(pipeline: String?) -> String {
        if let pipeline { return "no loads of \(pipeline) yet: its DAG's load tasks record theirs here" }
        return
            "no loads yet: the ingestion DAGs (\(PipelineDAGs.ingestions.joined(separator: ", "))) "
            + "record theirs here when they run"
    }

    /// The load `id`, if there is one.
    public static func load(_ pg: PostgresConnection, _ s: PipelineSettings, id: Int64) throws -> Load? {
        try loads(pg, s, pipeline: nil, id: id, limit: 1).first
    }

    /// Newest first; `pipeline` nil for all.
    public static func loads(
        _ pg: PostgresConnection, _ s: PipelineSettings, pipeline: String?, id: Int64? = nil, limit: Int
    ) throws -> [Load] {
        try pg.query(
            """
            SELECT id, pipeline, source, state, started_at, broke_at, finished_at,
                   rows_read, rows_loaded, rows_rejected, bytes, coalesce(error, '')
            FROM \(s.loads).load WHERE ($1::text IS NULL OR pipeline = $1) AND ($3::bigint IS NULL OR id = $3)
            ORDER BY id DESC LIMIT $2
            """, [pipeline, limit, id]
        ).rows.map { r in
            Load(
                id: try r.decode(Int64.self, 0), pipeline: try r.decode(String.self, 1),
                source: try r.decode(String.self, 2),
                state: try r.decode(String.self, 3), startedAt: try r.decode(Date?.self, 4),
                brokeAt: try r.decode(Date?.self, 5),
                finishedAt: try r.decode(Date?.self, 6), rowsRead: try r.decode(Int64.self, 7),
                rowsLoaded: try r.decode(Int64.self, 8),
                rowsRejected: try r.decode(Int64.self, 9), bytes: try r.decode(Int64.self, 10),
                error: try r.decode(String.self, 11))
        }
    }

    public struct Reject: Codable, Sendable {
        public let source: String
        public let line: Int64
        public let reason: String
        public let raw: String
    }

    /// The rows load `load` rejected, by line.
    public static func rejects(
        _ pg: PostgresConnection, _ s: PipelineSettings, load: Int64, limit: Int
    ) throws -> [Reject] {
        try pg.query(
            """
            SELECT source, line_number, reason, raw FROM \(s.loads).reject
            WHERE load_id = $1 ORDER BY line_number LIMIT $2
            """, [load, limit]
        ).rows.map { r in
            Reject(
                source: try r.decode(String.self, 0), line: try r.decode(Int64.self, 1),
                reason: try r.decode(String.self, 2), raw: try r.decode(String.self, 3))
        }
    }
}
