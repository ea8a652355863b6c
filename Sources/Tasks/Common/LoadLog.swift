import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The load metadata (`loads.load`): when each load started, broke and finished, with its counts.
/// Rows read always equal rows loaded plus rows rejected (the table checks it).
public struct LoadLog {
    public let pg: PostgresConnection
    public let schema: String

    public init(pg: PostgresConnection, schema: String) {
        self.pg = pg
        self.schema = schema
    }

    /// Records a load as started (committed at once, so that it shows while it runs).
    public func begin(pipeline: String, source: String, runID: Int64?, logicalDate: String?) throws -> Int64 {
        try pg.query(
            """
            INSERT INTO \(schema).load (pipeline, source, run_id, logical_date) VALUES ($1, $2, $3, $4::date)
            RETURNING id
            """, [pipeline, source, runID, logicalDate]
        ).rows[0].decode(Int64.self, 0)
    }

    /// Records the final counts; run on the connection whose transaction holds the load's data.
    public func finish(
        _ id: Int64, read: Int64, loaded: Int64, rejected: Int64, bytes: Int64, on conn: PostgresConnection? = nil
    ) throws {
        try (conn ?? pg).query(
            """
            UPDATE \(schema).load SET state = 'finished', finished_at = clock_timestamp(), rows_read = $2,
                   rows_loaded = $3, rows_rejected = $4, bytes = $5 WHERE id = $1
            """, [id, read, loaded, rejected, bytes])
    }

    /// Records that the load broke, with the error; a later attempt resumes or starts again.
    public func broke(_ id: Int64, error: String) throws {
        try pg.query(
            """
            UPDATE \(schema).load SET state = 'broken', broke_at = clock_timestamp(), error = $2
            WHERE id = $1 AND state <> 'finished'
            """, [id, String(error.prefix(4000))])
    }

    /// Makes the caller the only running load of `pipeline` (a lock held by `tx`'s transaction),
    /// then marks loads of it still shown `running` as broken: the attempt that ran them ended
    /// without recording an end (it was killed, timed out or superseded, and its data rolled back).
    public func takeOver(pipeline: String, tx: PostgresConnection) throws {
        try tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", ["\(schema) \(pipeline) load"])
        try markAbandoned(pipeline: pipeline)
    }

    /// Marks loads of `pipeline` still shown `running` as broken; the caller holds the pipeline's
    /// load lock, so none of them is still going.
    public func markAbandoned(pipeline: String) throws {
        try pg.query(
            """
            UPDATE \(schema).load SET state = 'broken', broke_at = clock_timestamp(),
                   error = 'abandoned: the attempt that ran it ended without recording an end (killed, timed out or \
            superseded); its writes were rolled back'
            WHERE pipeline = $1 AND state = 'running'
            """, [pipeline])
    }

    /// Marks a broken load as running again.
    public func resume(_ id: Int64) throws {
        try pg.query("UPDATE \(schema).load SET state = 'running' WHERE id = $1 AND state = 'broken'", [id])
    }
}

/// One rejected row or line.
public struct Rejection: Sendable, Equatable {
    public var line: Int64
    public var raw: String
    public var reason: String

    /// Raw text kept per rejected row, at most.
    public static let rawLimit = 2048

    public init(line: Int64, raw: String, reason: String) {
        self.line = line
        let cut =
            raw.utf8.count > Self.rawLimit
            ? String(decoding: raw.utf8.prefix(Self.rawLimit), as: UTF8.self) + "…" : raw
        self.raw = Self.storable(cut)
        self.reason = Self.storable(reason)
    }

    /// Postgres text cannot hold NUL: it is shown as ␀.
    static func storable(_ s: String) -> String {
        s.utf8.contains(0) ? String(s.map { $0 == "\0" ? "\u{2400}" : $0 }) : s
    }

    public init(line: Int64, raw: UnsafeBufferPointer<UInt8>, reason: String) {
        var end = raw.count
        while end > 0 && (raw[end - 1] == 10 || raw[end - 1] == 13) { end -= 1 }
        let cut = min(end, Self.rawLimit)
        // Bytes that are not UTF-8 become U+FFFD; NUL (which Postgres text cannot hold) becomes ␀.
        let text = Self.storable(String(decoding: UnsafeBufferPointer(rebasing: raw[0..<cut]), as: UTF8.self))
        self.line = line
        self.raw = cut < end ? text + "…" : text
        self.reason = Self.storable(reason)
    }

    /// COPYs rejections into `<schema>.reject` for one load and source.
    public static func store(
        _ rejects: [Rejection], load: Int64, source: String, schema: String, on pg: PostgresConnection
    ) throws {
        guard !rejects.isEmpty else { return }
        let loadText = String(load)
        try pg.copyIn("COPY \(schema).reject (load_id, source, line_number, raw, reason) FROM STDIN") { w in
            for r in rejects { try w.writeRow([loadText, source, String(r.line), r.raw, r.reason]) }
        }
    }
}
