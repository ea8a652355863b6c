import Foundation
import PostgresClient

/// Which computed reports read data that was corrected after they were computed.
///
/// A report for D reads fixed inputs (see the README's report definitions), so it changes only
/// when one of those inputs is corrected: a b2b export day in its order window re-exported and
/// loaded again, or access-log lines with timestamps on or before D loaded after it was computed
/// (late lines, a grown or newly found file), or, for the report that names countries from the
/// IP-to-country table, a load that changed the table's country names. Such a report is out of
/// date until it is computed again (a backfill with `--rerun all` for its dates).
public enum Freshness {
    public struct Computed: Sendable, Codable, Equatable {
        public let report: String
        public let date: String
        public let computedAt: String
        /// Why it is out of date (empty: it is current).
        public let outOfDate: [String]
    }

    /// Every computed report (or `report`'s, or for `date` only), newest date first, with the
    /// corrections it has not seen.
    public static func computed(
        pg: PostgresConnection, settings s: PipelineSettings, report: String? = nil, date: Day? = nil,
        limit: Int = 1000
    ) throws -> [Computed] {
        let rows = try pg.query(
            """
            SELECT rc.report, rc.logical_date::text,
                   to_char(rc.computed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                   coalesce((SELECT string_agg(why, '; ' ORDER BY why) FROM (
                       SELECT 'b2b day ' || d.day || ' loaded again at '
                              || to_char(d.replaced_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS why
                       FROM \(s.loads).b2b_day d
                       WHERE rc.report = ANY($3::text[]) AND d.replaced_at > rc.computed_at
                         AND d.day >= date_trunc('month', rc.logical_date) - interval '12 months'
                         AND d.day < date_trunc('month', rc.logical_date)
                       UNION ALL
                       SELECT 'access log ' || w.name || ' (lines from ' || w.first_day || ') loaded at '
                              || to_char(w.loaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                       FROM (\(weblogLoads(s))) w
                       WHERE rc.report = ANY($4::text[]) AND w.loaded_at > rc.computed_at
                         AND w.first_day <= rc.logical_date
                       UNION ALL
                       SELECT 'ip2geo country names changed at '
                              || to_char(v.changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                       FROM \(s.loads).ip2geo_names v
                       WHERE rc.report = ANY($5::text[]) AND v.changed_at > rc.computed_at
                         AND EXISTS (SELECT 1 FROM \(s.loads).ip2geo_names p WHERE p.id < v.id)
                   ) x), '')
            FROM \(s.loads).report_computed rc
            WHERE ($1::text IS NULL OR rc.report = $1) AND ($2::date IS NULL OR rc.logical_date = $2::date)
            ORDER BY rc.logical_date DESC, rc.report
            LIMIT \(limit)
            """,
            [
                report, date?.description, arrayLiteral(Reports.all.filter(\.readsOrders).map(\.name)),
                arrayLiteral(readers(of: "weblog")), arrayLiteral(readers(of: "ip2geo")),
            ])
        return try rows.rows.map { r in
            let why = try r.decode(String.self, 3)
            return Computed(
                report: try r.decode(String.self, 0), date: try r.decode(String.self, 1),
                computedAt: try r.decode(String.self, 2),
                outOfDate: why.isEmpty ? [] : why.components(separatedBy: "; "))
        }
    }

    /// The reports that read a source (by their upstream DAGs).
    static func readers(of source: String) -> [String] {
        Reports.all.filter { $0.upstreamDAGs.contains(source) }.map(\.name)
    }

    static func arrayLiteral(_ names: [String]) -> String { "{" + names.joined(separator: ",") + "}" }

    /// Each loaded segment of the access logs (a file's lines, or the lines a grown file added):
    /// its file's name, the first day its lines reach, when it was loaded to its end
    /// (`loads.weblog_change`).
    static func weblogLoads(_ s: PipelineSettings) -> String {
        """
        SELECT name, first_day, loaded_at FROM \(s.loads).weblog_change
        WHERE loaded_at IS NOT NULL AND first_day IS NOT NULL AND rows_loaded > 0
        """
    }
}
