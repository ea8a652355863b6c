import Foundation
import Orchestration
import PostgresClient

/// How far each source's data is complete, and the check that makes a report wait for it.
///
/// - b2b: the latest day D such that every export day from the history's start to D is loaded
///   (`B2BLoad.watermark`).
/// - weblog: a report for D waits while any registered access-log range (a file's lines, or the
///   lines a grown file added) whose first day is on or before D is not loaded to its end,
///   whichever run registered it (`WeblogLoad.pendingFrom`), and while a weblog run for D or an
///   earlier date has not ended (it brings such files). The weblog watermark shown is the day
///   before the latest loaded line's day, and before the first such range's day
///   (`WeblogLoad.watermark`), both from the ledger.
public enum Watermarks {
    public struct Source: Sendable, Equatable, Codable {
        public let name: String
        /// Complete up to and including this day, YYYY-MM-DD (nil: nothing loaded yet).
        public let through: String?
        /// What is still loading (empty when nothing is).
        public let pending: String
    }

    /// The sources' watermarks now.
    public static func sources(pg: PostgresConnection, settings s: PipelineSettings) throws -> [Source] {
        let pending = try WeblogLoad.pendingFrom(pg: pg, settings: s)
        return [
            Source(name: "b2b", through: try B2BLoad.watermark(pg: pg, settings: s)?.description, pending: ""),
            Source(
                name: "weblog", through: try WeblogLoad.watermark(pg: pg, settings: s)?.description,
                pending: pending.map { "files with lines from \($0) are still loading" } ?? ""),
        ]
    }

    /// The input check of `report`'s DAG: nil when the sources it reads are complete for the date.
    public static func check(_ report: Reports.Report, _ s: PipelineSettings) -> InputCheck {
        let upstream = report.upstreamDAGs
        return { pg, metadata, date in
            let day = Day(date)
            var waits: [String] = []
            // A weblog run for D or an earlier date that has not ended yet brings (or generates) files
            // with lines on or before D: wait for it too, not only for the same date's run.
            if upstream.contains("weblog") {
                let r = try pg.query(
                    """
                    SELECT count(*), min(logical_date AT TIME ZONE 'UTC')::date::text FROM \(metadata).dag_run
                    WHERE dag_id = 'weblog' AND state IN ('queued', 'running')
                      AND logical_date < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
                    """, [day.description]
                ).rows[0]
                if try r.decode(Int64.self, 0) > 0 {
                    waits.append("weblog runs for \(try r.decode(String.self, 1)) to \(day) to end")
                }
            }
            if upstream.contains("b2b") {
                let w = try B2BLoad.watermark(pg: pg, settings: s)
                if w.map({ $0 < day }) ?? true {
                    waits.append("b2b exports loaded through \(day) (now through \(w.map(\.description) ?? "none"))")
                }
            }
            if upstream.contains("weblog"), let from = try WeblogLoad.pendingFrom(pg: pg, settings: s), from <= day {
                waits.append("access-log files with lines from \(from) to be loaded to their end")
            }
            return waits.isEmpty ? nil : waits.joined(separator: "; ")
        }
    }
}
