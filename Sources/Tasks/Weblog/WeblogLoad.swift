import Broker
import Crypto
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Incremental, restartable, parallel loading of access-log files.
///
/// - `register` puts each new file in the ledger (`loads.weblog_file`: name, size, SHA-256,
///   lines) and splits it into byte ranges at line starts (`loads.weblog_range`), in one pass.
///   A file whose checksum is already there is not loaded again, whatever its name.
/// - `loadPart` (run as several parallel tasks) claims ranges one at a time and loads each in
///   chunks: a chunk's rows, its rejects and the range's new committed offset commit together, and
///   the commit only applies if this loader still owns the range at the offset it started from. A
///   loader that dies leaves its range at the last committed chunk; its task's next attempt (or
///   the next run) resumes there, so no line is lost or stored twice.
/// - `finalize` closes the load of every file whose ranges are all done.
public enum WeblogLoad {
    public struct Registered: Sendable {
        public var newFiles: [String] = []
        public var alreadyKnown: [String] = []
        public var ranges = 0
    }

    public static func register(
        pg: PostgresConnection, settings s: PipelineSettings, runID: Int64?, logicalDate: String?,
        log: (String) -> Void
    ) throws -> Registered {
        var result = Registered()
        let dir = s.weblogDir
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasPrefix("access_log_") && $0.hasSuffix(".log") }.sorted()
        for name in names {
            let path = "\(dir)/\(name)"
            let size = Int64((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
            // The same name and size, already in the ledger: skip without reading the file again.
            if try pg.query("SELECT 1 FROM \(s.loads).weblog_file WHERE name = $1 AND size = $2", [name, size]).rows
                .count > 0
            {
                result.alreadyKnown.append(name)
                continue
            }
            let scan = try scanFile(path: path, rangeBytes: Int64(s.rangeBytes))
            try pg.transaction { tx in
                let existing = try tx.query(
                    "SELECT name FROM \(s.loads).weblog_file WHERE checksum = $1", [scan.checksum]
                ).rows.first
                if let existing {
                    log(
                        "\(name) has the same content as \(try existing.decode(String.self, 0)),"
                            + " which is in the ledger already; not loading it again"
                    )
                    result.alreadyKnown.append(name)
                    return
                }
                let load = try LoadLog(pg: tx, schema: s.loads).begin(
                    pipeline: "weblog", source: path, runID: runID, logicalDate: logicalDate)
                let file = try tx.query(
                    """
                    INSERT INTO \(s.loads).weblog_file (name, path, size, checksum, lines, load_id)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
                    """, [name, path, size, scan.checksum, scan.lines, load]
                ).rows[0].decode(Int64.self, 0)
                for (i, r) in scan.ranges.enumerated() {
                    try tx.query(
                        """
                        INSERT INTO \(s.loads).weblog_range
                            (file_id, part, start_offset, end_offset, first_line, committed_offset, next_line)
                        VALUES ($1, $2, $3, $4, $5, $3, $5)
                        """, [file, i, r.start, r.end, r.firstLine])
                }
                try tx.query("UPDATE \(s.loads).load SET bytes = $2 WHERE id = $1", [load, size])
                result.newFiles.append(name)
                result.ranges += scan.ranges.count
                log(
                    "registered \(name): \(size) bytes, \(scan.lines) lines, \(scan.ranges.count) ranges,"
                        + " sha256 \(scan.checksum.prefix(12))…"
                )
            }
        }
        // Ranges another run left `loading` and has not touched for 5 minutes (its loader is gone)
        // go back to the pool; they keep their committed offset, so they resume where they stopped.
        // A live loader commits a chunk far more often than that.
        let freed = try pg.query(
            """
            UPDATE \(s.loads).weblog_range SET state = 'pending', owner = NULL
            WHERE state = 'loading' AND owner NOT LIKE $1 AND updated_at < clock_timestamp() - interval '5 minutes'
            """, ["run \(runID ?? -1)/%"]
        ).affectedRows
        if freed > 0 {
            log("\(freed) range(s) left unfinished by an earlier run will resume from their last committed chunk")
        }
        return result
    }

    struct Scan {
        var checksum = ""
        var lines: Int64 = 0
        var ranges: [(start: Int64, end: Int64, firstLine: Int64)] = []
    }

    /// One pass over a file: SHA-256, line count and range boundaries at line starts.
    static func scanFile(path: String, rangeBytes: Int64) throws -> Scan {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw PipelineError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var hasher = SHA256()
        let size = 4 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buf.deallocate() }
        var offset: Int64 = 0
        var newlines: Int64 = 0
        var starts: [(Int64, Int64)] = [(0, 1)]
        var nextTarget = rangeBytes
        var lastByte: UInt8 = 10
        while true {
            let n = read(fd, buf, size)
            if n < 0 { throw PipelineError("cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buf, count: n))
            var p = 0
            while p < n, let hit = memchr(buf + p, 10, n - p) {
                let i = buf.distance(to: hit)
                newlines += 1
                let lineStart = offset + Int64(i) + 1
                if lineStart >= nextTarget {
                    starts.append((lineStart, newlines + 1))
                    nextTarget = lineStart + rangeBytes
                }
                p = i + 1
            }
            lastByte = buf.load(fromByteOffset: n - 1, as: UInt8.self)
            offset += Int64(n)
        }
        // A boundary at the very end of the file starts no line.
        if let last = starts.last, last.0 >= offset, starts.count > 1 { starts.removeLast() }
        var scan = Scan()
        scan.checksum = Hex.encode(hasher.finalize())
        scan.lines = newlines + (offset > 0 && lastByte != 10 ? 1 : 0)
        for (i, s) in starts.enumerated() {
            scan.ranges.append((s.0, i + 1 < starts.count ? starts[i + 1].0 : offset, s.1))
        }
        return scan
    }

    public struct PartResult: Sendable {
        public var ranges = 0
        public var read: Int64 = 0
        public var loaded: Int64 = 0
        public var rejected: Int64 = 0
    }

    /// Claims and loads ranges until none is left. `owner` names this task in this run
    /// (`run <id>/<task>`), so that its next attempt resumes the ranges it held.
    public static func loadPart(
        pg: PostgresConnection, settings s: PipelineSettings, owner: String,
        checkDeadline: () throws -> Void, log: (String) -> Void
    ) throws -> PartResult {
        let rules = try DeviceRules.shared(path: s.uapRegexes)
        var enricher = WeblogEnricher(
            rules: rules, ranges: try WeblogEnricher.ranges(pg: pg, settings: s), cacheSize: s.deviceCache)
        var total = PartResult()
        let columns = "file_id, part, start_offset, end_offset, committed_offset, next_line"
        while true {
            try checkDeadline()
            var row = try pg.query(
                """
                SELECT \(columns) FROM \(s.loads).weblog_range
                WHERE owner = $1 AND state = 'loading' ORDER BY file_id, part LIMIT 1
                """, [owner]
            ).rows.first
            if row == nil {
                row = try pg.query(
                    """
                    UPDATE \(s.loads).weblog_range r SET state = 'loading', owner = $1, updated_at = clock_timestamp()
                    FROM (SELECT file_id, part FROM \(s.loads).weblog_range WHERE state = 'pending'
                          ORDER BY file_id, part LIMIT 1 FOR UPDATE SKIP LOCKED) p
                    WHERE r.file_id = p.file_id AND r.part = p.part
                    RETURNING r.file_id, r.part, r.start_offset, r.end_offset, r.committed_offset, r.next_line
                    """, [owner]
                ).rows.first
            }
            guard let row else { return total }
            let file = try row.decode(Int64.self, 0)
            let part = try row.decode(Int.self, 1)
            let end = try row.decode(Int64.self, 3)
            var committed = try row.decode(Int64.self, 4)
            var nextLine = try row.decode(Int64.self, 5)
            try pg.query(
                "UPDATE \(s.loads).weblog_file SET state = 'loading' WHERE id = $1 AND state = 'pending'", [file])
            let f = try pg.query("SELECT path, load_id, size FROM \(s.loads).weblog_file WHERE id = $1", [file]).rows[0]
            let path = try f.decode(String.self, 0)
            let load = try f.decode(Int64.self, 1)
            let size = Int64((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1)
            guard size == (try f.decode(Int64.self, 2)) else {
                let e = PipelineError(
                    "\(path) is \(size) bytes now but was \(try f.decode(Int64.self, 2)) when registered:"
                        + " a loaded log must not change. Fix: restore the file, or give new data a new file name"
                )
                try? LoadLog(pg: pg, schema: s.loads).broke(load, error: e.description)
                throw e
            }
            let loads = LoadLog(pg: pg, schema: s.loads)
            try loads.resume(load)
            let rangeStart = try row.decode(Int64.self, 2)
            if committed > rangeStart { log("resuming \(path) range \(part) at byte \(committed), line \(nextLine)") }
            total.ranges += 1
            if committed >= end {
                // Nothing left (an empty file, or a range whose last chunk committed just before a crash).
                try pg.query(
                    """
                    UPDATE \(s.loads).weblog_range SET state = 'done', updated_at = clock_timestamp()
                    WHERE file_id = $1 AND part = $2 AND owner = $3
                    """, [file, part, owner])
                continue
            }
            do {
                let reader = try LineReader(path: path, from: committed, end: end)
                var finished = false
                while !finished {
                    try checkDeadline()
                    var rejects: [Rejection] = []
                    var read: Int64 = 0
                    var loaded: Int64 = 0
                    var offset = committed
                    var line = nextLine
                    let fileText = String(file)
                    try pg.transaction { tx in
                        // The range's row, locked for this chunk: a second loader of the same range
                        // (a message delivered twice) waits here instead of colliding on the rows'
                        // keys, then sees the offset moved and stops with the reason.
                        let current = try tx.query(
                            """
                            SELECT committed_offset FROM \(s.loads).weblog_range
                            WHERE file_id = $1 AND part = $2 AND owner = $3 FOR UPDATE
                            """, [file, part, owner]
                        ).rows.first
                        guard let current, try current.decode(Int64.self, 0) == committed else {
                            throw TakenOver(
                                message: "range \(part) of \(path) was taken over by another loader;"
                                    + " this chunk was rolled back")
                        }
                        try tx.copyIn(
                            """
                            COPY \(s.datalake).weblogs (file_id, line_number, client_ip, username, requested_at,
                                 method, path, status, bytes, referer, user_agent, device, os, country_code) FROM STDIN
                            """
                        ) { w in
                            var reachedEnd = true
                            try reader.forEachLine { bytes, _, cut in
                                read += 1
                                defer { line += 1 }
                                switch enricher.enrich(bytes, cut: cut) {
                                case .success(let r):
                                    loaded += 1
                                    let rec = r.record
                                    try w.writeRow([
                                        fileText, String(line), rec.clientIP, rec.user, r.timestamp, rec.method,
                                        rec.path ?? rec.rawRequest, String(rec.status), rec.bytes.map { String($0) },
                                        rec.referer, rec.userAgent, r.device, r.os, r.country,
                                    ])
                                case .failure(let e):
                                    rejects.append(Rejection(line: line, raw: bytes, reason: e.reason))
                                }
                                if read >= s.chunkLines {
                                    reachedEnd = false
                                    return false
                                }
                                return true
                            }
                            offset = reachedEnd ? end : reader.offset
                        }
                        try Rejection.store(rejects, load: load, source: path, schema: s.loads, on: tx)
                        let done = offset >= end
                        let moved = try tx.query(
                            """
                            UPDATE \(s.loads).weblog_range
                            SET committed_offset = $4, next_line = $5, rows_read = rows_read + $6,
                                rows_loaded = rows_loaded + $7, rows_rejected = rows_rejected + $8,
                                state = CASE WHEN $9 THEN 'done' ELSE 'loading' END, updated_at = clock_timestamp()
                            WHERE file_id = $1 AND part = $2 AND owner = $3 AND committed_offset = $10
                            """,
                            [
                                file, part, owner, min(offset, end), line, read, loaded, Int64(rejects.count), done,
                                committed,
                            ]
                        ).affectedRows
                        guard moved == 1 else {
                            throw TakenOver(
                                message: "range \(part) of \(path) was taken over by another loader;"
                                    + " this chunk was rolled back")
                        }
                        finished = done
                    }
                    committed = min(offset, end)
                    nextLine = line
                    total.read += read
                    total.loaded += loaded
                    total.rejected += Int64(rejects.count)
                }
            } catch let e as TakenOver {
                throw e  // the other loader goes on with the load: it is not broken
            } catch {
                try? loads.broke(load, error: "range \(part): \(error)")
                throw error
            }
        }
    }

    public struct Finalized: Sendable {
        public var files: [(name: String, read: Int64, loaded: Int64, rejected: Int64)] = []
        /// Files with ranges still loading or pending.
        public var unfinished = 0
        /// Files this run registered whose ranges are not all loaded yet (another run's loader
        /// may hold some): the run's load is not complete.
        public var unfinishedOwn = 0
    }

    /// Closes the load of each file whose ranges are all done. Ranges another run is loading are
    /// left to that run.
    public static func finalize(pg: PostgresConnection, settings s: PipelineSettings, runID: Int64) throws -> Finalized
    {
        var out = Finalized()
        out.unfinishedOwn = try pg.query(
            """
            SELECT count(DISTINCT f.id) FROM \(s.loads).weblog_file f JOIN \(s.loads).load l ON l.id = f.load_id
            JOIN \(s.loads).weblog_range r ON r.file_id = f.id WHERE l.run_id = $1 AND r.state <> 'done'
            """, [runID]
        ).rows[0].decode(Int.self, 0)
        let rows = try pg.query(
            """
            SELECT f.id, f.name, f.load_id, sum(r.rows_read)::bigint, sum(r.rows_loaded)::bigint,
                   sum(r.rows_rejected)::bigint, bool_and(r.state = 'done')
            FROM \(s.loads).weblog_file f JOIN \(s.loads).weblog_range r ON r.file_id = f.id
            WHERE f.state <> 'loaded' GROUP BY f.id ORDER BY f.id
            """
        ).rows
        for r in rows {
            guard try r.decode(Bool.self, 6) else {
                out.unfinished += 1
                continue
            }
            let (id, name, load) = (
                try r.decode(Int64.self, 0), try r.decode(String.self, 1), try r.decode(Int64.self, 2)
            )
            let (read, loaded, rejected) = (
                try r.decode(Int64.self, 3), try r.decode(Int64.self, 4), try r.decode(Int64.self, 5)
            )
            try pg.transaction { tx in
                try tx.query(
                    "UPDATE \(s.loads).weblog_file SET state = 'loaded', loaded_at = clock_timestamp() WHERE id = $1",
                    [id])
                try tx.query(
                    """
                    UPDATE \(s.loads).load SET state = 'finished', finished_at = clock_timestamp(), rows_read = $2,
                           rows_loaded = $3, rows_rejected = $4 WHERE id = $1
                    """, [load, read, loaded, rejected])
            }
            out.files.append((name, read, loaded, rejected))
        }
        return out
    }
}

/// A loader found its range's committed offset moved by another loader of the same range (a
/// message delivered twice): its chunk was rolled back and it stops; the other goes on.
struct TakenOver: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension WeblogLoad {
    /// The earliest day with lines in a registered file not loaded to its end (nil: every file is).
    /// Until files record their first line's time, a file still loading counts from its
    /// registration's day minus one (conservative).
    public static func pendingFrom(pg: PostgresConnection, settings s: PipelineSettings) throws -> Day? {
        let r = try pg.query(
            """
            SELECT (min(registered_at AT TIME ZONE 'UTC')::date - 1)::text FROM \(s.loads).weblog_file
            WHERE state <> 'loaded'
            """)
        return try r.rows.first?.decode(String?.self, 0).flatMap { Day(strict: $0) }
    }

    /// The latest day the loaded access logs reach (placeholder until file parts record their days).
    public static func watermark(pg: PostgresConnection, settings s: PipelineSettings) throws -> Day? {
        let r = try pg.query("SELECT (max(requested_at AT TIME ZONE 'UTC'))::date::text FROM \(s.datalake).weblogs")
        return try r.rows.first?.decode(String?.self, 0).flatMap { Day(strict: $0) }
    }
}
