import PostgresClient

extension LoadQueries {
    /// Rows loaded and rejected by all loads of one pipeline (`/metrics`' ingest counters).
    public struct Totals: Sendable, Equatable {
        public let pipeline: String
        public let loaded: Int64
        public let rejected: Int64
    }

    /// Every pipeline's totals over all its loads, by pipeline name.
    public static func totals(_ pg: PostgresConnection, _ s: PipelineSettings) throws -> [Totals] {
        try pg.query(
            """
            SELECT pipeline, coalesce(sum(rows_loaded), 0)::bigint, coalesce(sum(rows_rejected), 0)::bigint
            FROM \(s.loads).load GROUP BY pipeline ORDER BY pipeline
            """
        ).rows.map {
            Totals(
                pipeline: try $0.decode(String.self, 0), loaded: try $0.decode(Int64.self, 1),
                rejected: try $0.decode(Int64.self, 2))
        }
    }
}
