import Broker
import Crypto
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Incremental, restartable, parallel loading of access-log files, as Apache and logrotate write
/// them: a file grows, is renamed (`access_log` → `access_log.1`), gzipped, and a new file takes
/// its old name.
///
/// - `register` looks at every `access_log*` and `access.log*` file in the weblog folder. A file is known by the
///   SHA-256 of its first line and of the bytes registered so far (`loads.weblog_file`): the same
///   first line and bytes are the same file under whatever name; complete lines after them are a
///   new segment of it (one load, cut at line starts into byte ranges, `loads.weblog_range`, line
///   numbers going on). Registered bytes that changed are refused (a broken load naming the file;
///   the run fails at `finalize`). A trailing line without its newline waits for the next run,
///   unless the file is final (rotated or gzipped).
/// - `loadPart` (run as several parallel tasks) claims ranges one at a time and loads each in
///   chunks: a chunk's rows, its rejects and the range's new committed offset commit together, and
///   the commit only applies if this loader still owns the range at the offset it started from. A
///   loader that dies leaves its range at the last committed chunk; its task's next attempt (or
///   the next run) resumes there, so no line is lost or stored twice.
/// - `finalize` closes the load of every segment whose ranges are all done.
public enum WeblogLoad {
    public struct Registered: Sendable {
        /// Files seen for the first time.
        public var newFiles: [String] = []
        /// Known files with new complete lines (a new segment each).
        public var grown: [String] = []
        public var alreadyKnown: [String] = []
        /// Files with no complete line yet.
        public var waiting: [String] = []
        /// Files refused (their loaded bytes changed), each with the reason.
        public var refused: [String] = []
        public var ranges = 0
    }

    /// Whether a log file of this name is complete: its last line is loaded even without a
    /// newline. Only a gzipped file is (`*.gz`): a file renamed by rotation (`access_log.1`,
    /// `access_log-YYYYMMDD`) may still be written to by Apache until its graceful reload, so its
    /// unterminated last line waits like any other file's.
    public static func isFinal(name: String) -> Bool { name.hasSuffix(".gz") }

    struct FileStat {
        var size: Int64
        var mtimeNs: Int64
        var regular: Bool
    }

    static func fileStat(_ path: String) -> FileStat? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStat(
            size: Int64(st.st_size), mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
            regular: (st.st_mode & S_IFMT) == S_IFREG)
    }

    /// Whether the ledger has a file last seen under `name` (or `name.gz`); false before the
    /// ledger exists (fresh schemas, before create_tables).
    static func inLedger(pg: PostgresConnection, _ s: PipelineSettings, name: String) throws -> Bool {
        guard try pg.tableExists("\(s.loads).weblog_file") else { return false }
        return try pg.query(
            "SELECT 1 FROM \(s.loads).weblog_file WHERE name IN ($1, $1 || '.gz') LIMIT 1", [name]
        ).rows.count > 0
    }

    /// How long a gzip file that ends mid-stream is taken to be still being written (seconds since
    /// it was last modified); after that it is cut short, and refused.
    static let gzipWriteGrace: Double = 600

    /// The weblog folder's `access_log*` (Apache's default name) and `access.log*` (Debian's)
    /// regular files, by name.
    static func logFiles(_ dir: String) -> [String] {
        // Not a file being written under a temporary name (the generator's, BufferedFileWriter's
        // `<name>.tmp-<pid>-<n>`, left behind by a killed worker).
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { ($0.hasPrefix("access_log") || $0.hasPrefix("access.log")) && !$0.contains(".tmp-") }
            .sorted()
    }

    /// `also`: folders whose `access_log*` and `access.log*` files are registered too (a manual run's `source`,
    /// resolved); a file there that is a link leading out of its folder is skipped, with a line in
    /// the log.
    public static func register(
        pg: PostgresConnection, settings s: PipelineSettings, runID: Int64?, logicalDate: String?,
        also: [String] = [], log: (String) -> Void
    ) throws -> Registered {
        var result = Registered()
        try resolveOldLedger(pg: pg, settings: s, log: log)
        // A refusal counts for the runs that see the refused file: this registration (again, on a
        // retry) marks the ones it still finds, so a file moved away no longer fails this run.
        if let runID {
            try pg.query("UPDATE \(s.loads).weblog_seen SET run_id = NULL WHERE run_id = $1", [runID])
        }
        let candidates =
            logFiles(s.weblogDir).map { (name: $0, path: "\(s.weblogDir)/\($0)") }
            + also.flatMap { dir in
                logFiles(dir).compactMap { name -> (name: String, path: String)? in
                    let path = "\(dir)/\(name)"
                    guard let real = DAGParam.resolved(path), real.hasPrefix(dir + "/") else {
                        log("\(path) leads outside \(dir): not read")
                        return nil
                    }
                    return (name, path)
                }
            }
        for (name, path) in candidates {
            guard let st = fileStat(path), st.regular else { continue }
            // The same path, size and modification time as a ledger file: skip without reading it.
            if try pg.query(
                "SELECT 1 FROM \(s.loads).weblog_file WHERE path = $1 AND size = $2 AND mtime_ns = $3",
                [path, st.size, st.mtimeNs]
            ).rows.count > 0 {
                result.alreadyKnown.append(name)
                continue
            }
            // Seen as it is now already: a copy, or refused (the refusal is recorded once; every run
            // that sees the file still fails at finalize).
            if let seen = try pg.query(
                """
                UPDATE \(s.loads).weblog_seen s SET run_id = $4
                WHERE s.path = $1 AND s.size = $2 AND s.mtime_ns = $3
                RETURNING s.verdict, (SELECT error FROM \(s.loads).load WHERE id = s.load_id)
                """, [path, st.size, st.mtimeNs, runID]
            ).rows.first {
                if try seen.decode(String.self, 0) == "refused" {
                    result.refused.append(try seen.decode(String?.self, 1) ?? path)
                } else {
                    result.alreadyKnown.append(name)
                }
                continue
            }
            do {
                try registerFile(
                    pg: pg, settings: s, path: path, name: name, stat: st, runID: runID, logicalDate: logicalDate,
                    result: &result, log: log)
            } catch let e as UnreadableFile {
                // A gzip file cut short that was written to a moment ago is still being written
                // (logrotate's compress, gzip > file): it waits, as a trailing line without its newline does.
                // Only in the weblog folder, which every run looks at (a manual run's `source` folder is
                // looked at once), and only when written to in the past 10 minutes (not in the future).
                let age = Date().timeIntervalSince1970 - Double(st.mtimeNs) / 1e9
                if e.cutShort, age >= 0, age < gzipWriteGrace, path == "\(s.weblogDir)/\(name)" {
                    log(
                        "\(name) ends in the middle of its compressed stream and was written to \(Int(age)) s"
                            + " ago: it is still being written; it waits for the next run")
                    result.waiting.append(name)
                    continue
                }
                // A file that cannot be read (a corrupt gzip) is refused like a changed one; the others go on.
                try pg.transaction { tx in
                    try refuse(
                        tx: tx, settings: s, path: path, stat: st, ledgerID: nil,
                        error: "\(e); nothing of it was loaded", runID: runID, logicalDate: logicalDate,
                        result: &result, log: log)
                }
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

    /// Registers one candidate file: new, the same as a ledger file (maybe grown), or refused.
    static func registerFile(
        pg: PostgresConnection, settings s: PipelineSettings, path: String, name: String, stat st: FileStat,
        runID: Int64?, logicalDate: String?, result: inout Registered, log: (String) -> Void
    ) throws {
        let final = isFinal(name: name)
        let gzip = ByteSource.isGzipName(name)
        guard let first = try firstLineHash(path: path, gzip: gzip, final: final) else {
            log("\(name) has no complete line yet: it waits for the next run")
            result.waiting.append(name)
            return
        }
        try pg.transaction { tx in
            // One registration at a time decides what a file is.
            try tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", ["\(s.loads) weblog register"])
            let known = try tx.query(
                """
                SELECT id, name, path, size, mtime_ns, registered_end, prefix_checksum, lines
                FROM \(s.loads).weblog_file WHERE first_line_hash = $1 ORDER BY id
                """, [first]
            ).rows
            let file = File(path: path, name: name, stat: st, gzip: gzip, final: final, firstLine: first)
            var refusedBy: (id: Int64, name: String, path: String, end: Int64)?
            for k in known {
                let row = Known(
                    id: try k.decode(Int64.self, 0), name: try k.decode(String.self, 1),
                    path: try k.decode(String.self, 2), size: try k.decode(Int64.self, 3),
                    mtimeNs: try k.decode(Int64?.self, 4), end: try k.decode(Int64.self, 5),
                    prefix: try k.decode(String.self, 6), lines: try k.decode(Int64.self, 7))
                // (A plain file shorter than the registered bytes cannot hold them.)
                let scan =
                    !gzip && st.size < row.end
                    ? Scan()
                    : try scanFile(
                        path: path, rangeBytes: Int64(s.rangeBytes), known: row.end, firstLine: row.lines + 1,
                        final: final, gzip: gzip, split: !gzip)
                guard scan.prefixAtKnown == row.prefix else {
                    if refusedBy == nil { refusedBy = (row.id, row.name, row.path, row.end) }
                    continue
                }
                try sameFile(
                    tx: tx, settings: s, file: file, known: row, scan: scan, runID: runID,
                    logicalDate: logicalDate, result: &result, log: log)
                return
            }
            if let r = refusedBy {
                let error =
                    "\(path) is refused: it starts with the first line of ledger file \(r.id)"
                    + " (\(r.name), last seen at \(r.path)), but bytes 0..\(r.end) of it, which were"
                    + " loaded, changed since (or the file is shorter now); nothing of it was loaded."
                    + " Fix: restore the file as it was, or move the new data to a new file"
                try refuse(
                    tx: tx, settings: s, path: path, stat: st, ledgerID: r.id, error: error, runID: runID,
                    logicalDate: logicalDate, result: &result, log: log)
                return
            }
            let scan = try scanFile(
                path: path, rangeBytes: Int64(s.rangeBytes), final: final, gzip: gzip, split: !gzip)
            // A file of the first ledger (known by its whole checksum only) under another name.
            if let old = try tx.query(
                """
                UPDATE \(s.loads).weblog_file SET first_line_hash = $3, name = $4, path = $5, size = $6,
                       mtime_ns = $7, gzip = $8
                WHERE id = (SELECT id FROM \(s.loads).weblog_file
                            WHERE prefix_checksum = $1 AND registered_end = $2
                              AND (first_line_hash IS NULL OR first_line_hash = 'unknown') LIMIT 1)
                RETURNING id
                """, [scan.checksum, scan.end, first, name, path, st.size, st.mtimeNs, gzip]
            ).rows.first {
                log("\(name) is ledger file \(try old.decode(Int64.self, 0)) (same bytes); nothing new in it")
                result.alreadyKnown.append(name)
                return
            }
            let id = try tx.query(
                """
                INSERT INTO \(s.loads).weblog_file
                    (name, path, size, checksum, lines, first_line_hash, registered_end, prefix_checksum,
                     mtime_ns, gzip)
                VALUES ($1, $2, $3, $4, 0, $5, 0, $6, $7, $8) RETURNING id
                """,
                [
                    name, path, st.size, scan.checksum, first,
                    Hex.encode(SHA256.hash(data: Data())), st.mtimeNs, gzip,
                ]
            ).rows[0].decode(Int64.self, 0)
            let load = try addSegment(
                tx: tx, settings: s, fileID: id, file: file, from: 0, scan: scan, part: 0, segment: 0,
                runID: runID, logicalDate: logicalDate)
            try tx.query("UPDATE \(s.loads).weblog_file SET load_id = $2 WHERE id = $1", [id, load])
            try tx.query("DELETE FROM \(s.loads).weblog_seen WHERE path = $1", [path])
            result.newFiles.append(name)
            result.ranges += scan.ranges.count
            log(
                "registered \(name): \(scan.end) bytes, \(scan.lines) lines, \(scan.ranges.count) ranges,"
                    + " first line sha256 \(first.prefix(12))…"
            )
        }
    }

    /// A candidate file as found in the folder.
    struct File {
        var path: String
        var name: String
        var stat: FileStat
        var gzip: Bool
        var final: Bool
        var firstLine: String
    }

    /// A ledger file with the candidate's first line.
    struct Known {
        var id: Int64
        var name: String
        var path: String
        var size: Int64
        var mtimeNs: Int64?
        var end: Int64
        var prefix: String
        var lines: Int64
    }

    /// The candidate holds ledger file `known`'s registered bytes: it is that file, maybe renamed,
    /// rotated or gzipped, maybe grown.
    static func sameFile(
        tx: PostgresConnection, settings s: PipelineSettings, file: File, known: Known, scan: Scan, runID: Int64?,
        logicalDate: String?, result: inout Registered, log: (String) -> Void
    ) throws {
        let grew = scan.end > known.end
        // A copy: the ledger's own path still holds the file as last seen, and this adds nothing.
        if !grew, known.path != file.path, let there = fileStat(known.path), there.size == known.size,
            there.mtimeNs == known.mtimeNs
        {
            try tx.query(
                """
                INSERT INTO \(s.loads).weblog_seen (path, size, mtime_ns, verdict, file_id, run_id)
                VALUES ($1, $2, $3, 'copy', $4, $5)
                ON CONFLICT (path) DO UPDATE SET size = $2, mtime_ns = $3, verdict = 'copy', file_id = $4,
                    load_id = NULL, run_id = $5, seen_at = clock_timestamp()
                """, [file.path, file.stat.size, file.stat.mtimeNs, known.id, runID])
            log(
                "\(file.name) has the same content as \(known.path), which is in the ledger already;"
                    + " not loading it again"
            )
            result.alreadyKnown.append(file.name)
            return
        }
        try tx.query("DELETE FROM \(s.loads).weblog_seen WHERE path = $1", [file.path])
        try tx.query(
            """
            UPDATE \(s.loads).weblog_file SET name = $2, path = $3, size = $4, mtime_ns = $5, gzip = $6
            WHERE id = $1
            """, [known.id, file.name, file.path, file.stat.size, file.stat.mtimeNs, file.gzip])
        if known.path != file.path { log("\(known.path) is now \(file.path) (ledger file \(known.id))") }
        guard grew else {
            result.alreadyKnown.append(file.name)
            return
        }
        let next = try tx.query(
            """
            SELECT coalesce(max(part) + 1, 0), coalesce(max(segment) + 1, 0) FROM \(s.loads).weblog_range
            WHERE file_id = $1
            """, [known.id]
        ).rows[0]
        _ = try addSegment(
            tx: tx, settings: s, fileID: known.id, file: file, from: known.end, scan: scan,
            part: try next.decode(Int.self, 0), segment: try next.decode(Int.self, 1), runID: runID,
            logicalDate: logicalDate)
        result.grown.append(file.name)
        result.ranges += scan.ranges.count
        log(
            "\(file.name) (ledger file \(known.id)) grew: bytes \(known.end)..\(scan.end), \(scan.lines) new lines"
                + " from line \(known.lines + 1), \(scan.ranges.count) range(s)"
        )
    }

    /// Records a segment (its load, its ranges) and the file's new registered end.
    static func addSegment(
        tx: PostgresConnection, settings s: PipelineSettings, fileID: Int64, file: File, from start: Int64,
        scan: Scan, part: Int, segment: Int, runID: Int64?, logicalDate: String?
    ) throws -> Int64 {
        let load = try LoadLog(pg: tx, schema: s.loads).begin(
            pipeline: "weblog", source: "\(file.path) bytes \(start)..\(scan.end)", runID: runID,
            logicalDate: logicalDate)
        try tx.query("UPDATE \(s.loads).load SET bytes = $2 WHERE id = $1", [load, scan.end - start])
        let days = try firstDays(path: file.path, gzip: file.gzip, ranges: scan.ranges)
        for (i, r) in scan.ranges.enumerated() {
            try tx.query(
                """
                INSERT INTO \(s.loads).weblog_range
                    (file_id, part, start_offset, end_offset, first_line, committed_offset, next_line, segment,
                     load_id, lines, first_day)
                VALUES ($1, $2, $3, $4, $5, $3, $5, $6, $7, $8, $9::date)
                """,
                [fileID, part + i, r.start, r.end, r.firstLine, segment, load, r.lines, days[i]])
        }
        try tx.query(
            """
            UPDATE \(s.loads).weblog_file SET registered_end = $2, prefix_checksum = $3, lines = lines + $4,
                   state = 'pending'
            WHERE id = $1
            """, [fileID, scan.end, scan.checksum, scan.lines])
        return load
    }

    /// Refuses a candidate (it starts like a ledger file but the bytes loaded from that file are
    /// not there, or it cannot be read): nothing of it is loaded; a broken load says why and how to
    /// fix it (recorded once per path, size and modification time).
    static func refuse(
        tx: PostgresConnection, settings s: PipelineSettings, path: String, stat: FileStat, ledgerID: Int64?,
        error: String, runID: Int64?, logicalDate: String?, result: inout Registered, log: (String) -> Void
    ) throws {
        let logs = LoadLog(pg: tx, schema: s.loads)
        let load = try logs.begin(
            pipeline: "weblog", source: "\(path) (refused)", runID: runID, logicalDate: logicalDate)
        try logs.broke(load, error: error)
        try tx.query(
            """
            INSERT INTO \(s.loads).weblog_seen (path, size, mtime_ns, verdict, file_id, load_id, run_id)
            VALUES ($1, $2, $3, 'refused', $4, $5, $6)
            ON CONFLICT (path) DO UPDATE SET size = $2, mtime_ns = $3, verdict = 'refused', file_id = $4,
                load_id = $5, run_id = $6, seen_at = clock_timestamp()
            """, [path, stat.size, stat.mtimeNs, ledgerID, load, runID])
        log(error)
        result.refused.append(error)
    }

    /// Ledger files from before first-line identity: finds each at its path and, when its
    /// registered bytes are there, records its first line's hash ('unknown' when the path holds
    /// other bytes; a missing file is looked for again next time). Done ranges get their days
    /// from the loaded lines, once.
    static func resolveOldLedger(pg: PostgresConnection, settings s: PipelineSettings, log: (String) -> Void) throws {
        let rows = try pg.query(
            """
            SELECT id, path, registered_end, prefix_checksum, gzip, size FROM \(s.loads).weblog_file
            WHERE first_line_hash IS NULL ORDER BY id
            """
        ).rows
        for r in rows {
            let id = try r.decode(Int64.self, 0)
            let path = try r.decode(String.self, 1)
            guard let st = fileStat(path), st.regular else { continue }
            let scan = try scanFile(
                path: path, rangeBytes: .max, known: try r.decode(Int64.self, 2), final: true,
                gzip: try r.decode(Bool.self, 4), split: false)
            let first = try firstLineHash(path: path, gzip: try r.decode(Bool.self, 4), final: true)
            let same = scan.prefixAtKnown == (try r.decode(String.self, 3)) && first != nil
            try pg.query(
                "UPDATE \(s.loads).weblog_file SET first_line_hash = $2, mtime_ns = $3 WHERE id = $1",
                [
                    id, first.flatMap { same ? $0 : nil } ?? "unknown",
                    same && st.size == (try r.decode(Int64.self, 5)) ? st.mtimeNs : nil,
                ])
            if !same {
                log("\(path) no longer holds ledger file \(id)'s bytes; it is matched by its whole checksum only")
            }
        }
        try pg.query(
            """
            UPDATE \(s.loads).weblog_range r SET
                first_day = coalesce((SELECT min(w.requested_at AT TIME ZONE 'UTC')::date FROM \(s.datalake).weblogs w
                    WHERE w.file_id = r.file_id AND w.line_number >= r.first_line AND w.line_number < r.next_line),
                    '-infinity'),
                last_day = (SELECT max(w.requested_at AT TIME ZONE 'UTC')::date FROM \(s.datalake).weblogs w
                    WHERE w.file_id = r.file_id AND w.line_number >= r.first_line AND w.line_number < r.next_line)
            WHERE r.state = 'done' AND r.first_day IS NULL
            """)
    }

    /// The SHA-256 of a file's first line (up to and including its newline); nil when it has no
    /// complete line yet. A final file's only line counts without its newline.
    static func firstLineHash(path: String, gzip: Bool, final: Bool) throws -> String? {
        let source = try ByteSource(path: path, gzip: gzip)
        var hasher = SHA256()
        let size = 64 << 10
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buf.deallocate() }
        var any = false
        while true {
            let n = try source.read(into: buf, count: size)
            if n == 0 { return final && any ? Hex.encode(hasher.finalize()) : nil }
            any = true
            if let hit = memchr(buf, 10, n) {
                hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buf, count: buf.distance(to: hit) + 1))
                return Hex.encode(hasher.finalize())
            }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buf, count: n))
        }
    }

    /// Each range's first day, a conservative guess: the earliest timestamp among its first 32
    /// lines that parse, as `YYYY-MM-DD`; '-infinity' when none does.
    static func firstDays(path: String, gzip: Bool, ranges: [Scan.Range]) throws -> [String] {
        try ranges.map { r in
            var earliest: Int64?
            var seen = 0
            try LineReader(path: path, from: r.start, end: r.end, bufferSize: 256 << 10, gzip: gzip).forEachLine {
                line, _, cut in
                seen += 1
                if !cut, let rec = try? CombinedLogParser.parse(line) {
                    earliest = min(earliest ?? rec.timestamp, rec.timestamp)
                }
                return seen < 32
            }
            return earliest.map(day) ?? "-infinity"
        }
    }

    struct Scan {
        struct Range {
            var start: Int64
            var end: Int64
            var firstLine: Int64
            var lines: Int64
        }
        /// SHA-256 of bytes [0, known) (nil: the file is shorter).
        var prefixAtKnown: String?
        /// Where registered bytes end now: after the last complete line (a final file: its end),
        /// never before `known` (when the file is at least that long).
        var end: Int64 = 0
        /// SHA-256 of bytes [0, end).
        var checksum = ""
        /// Lines in [known, end).
        var lines: Int64 = 0
        /// [known, end) cut at line starts.
        var ranges: [Range] = []
    }

    /// One pass over a file (decompressed when gzipped): SHA-256 of its first line, of the bytes
    /// before `known` and of the bytes up to the new end; lines and range boundaries after `known`
    /// (at line starts, every `rangeBytes`, when `split`). A trailing line without a newline ends
    /// the new bytes only when the file is `final`.
    static func scanFile(
        path: String, rangeBytes: Int64, known: Int64 = 0, firstLine: Int64 = 1, final: Bool = true,
        gzip: Bool? = nil, split: Bool = true
    ) throws -> Scan {
        let source = try ByteSource(path: path, gzip: gzip)
        var hasher = SHA256()
        var atKnown: SHA256? = known == 0 ? SHA256() : nil
        var atLastNewline: SHA256?
        var lastNewlineEnd: Int64 = -1
        let size = 4 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buf.deallocate() }
        var offset: Int64 = 0
        var newlines: Int64 = 0  // after `known`
        var starts: [(Int64, Int64)] = [(known, firstLine)]
        var nextTarget = split ? known + rangeBytes : .max
        var lastByte: UInt8 = 10
        func hash(_ from: Int, _ to: Int) {
            if to > from { hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buf + from, count: to - from)) }
        }
        while true {
            let n = try source.read(into: buf, count: size)
            if n == 0 { break }
            // Newlines after `known`: line counts, range starts, the last one's position.
            var lastInBuffer = -1
            let skip = max(0, min(Int64(n), known - offset))  // bytes of this buffer before `known`
            var p = Int(skip)
            while p < n, let hit = memchr(buf + p, 10, n - p) {
                let i = buf.distance(to: hit)
                newlines += 1
                lastInBuffer = i
                let lineStart = offset + Int64(i) + 1
                if lineStart >= nextTarget {
                    starts.append((lineStart, firstLine + newlines))
                    nextTarget = lineStart + rangeBytes
                }
                p = i + 1
            }
            // Hash in order, keeping the state at `known` and after the last newline.
            var cursor = 0
            if atKnown == nil, offset + Int64(n) >= known {
                let k = Int(known - offset)
                hash(0, k)
                atKnown = hasher
                cursor = k
            }
            if lastInBuffer >= 0 {
                hash(cursor, lastInBuffer + 1)
                atLastNewline = hasher
                lastNewlineEnd = offset + Int64(lastInBuffer) + 1
                cursor = lastInBuffer + 1
            }
            hash(cursor, n)
            lastByte = buf.load(fromByteOffset: n - 1, as: UInt8.self)
            offset += Int64(n)
        }
        var scan = Scan()
        guard let atKnown, offset >= known else { return scan }
        scan.prefixAtKnown = Hex.encode(atKnown.finalize())
        if final && offset > known && lastByte != 10 {
            scan.end = offset
            scan.lines = newlines + 1
            scan.checksum = Hex.encode(hasher.finalize())
        } else if let atLastNewline, lastNewlineEnd > known {
            scan.end = lastNewlineEnd
            scan.lines = newlines
            scan.checksum = Hex.encode(atLastNewline.finalize())
        } else {
            scan.end = known
            scan.checksum = scan.prefixAtKnown!
            return scan
        }
        // A boundary at or after the end starts no line of this segment.
        while starts.count > 1, let last = starts.last, last.0 >= scan.end { starts.removeLast() }
        for (i, st) in starts.enumerated() {
            let next = i + 1 < starts.count ? starts[i + 1] : (scan.end, firstLine + scan.lines)
            scan.ranges.append(Scan.Range(start: st.0, end: next.0, firstLine: st.1, lines: next.1 - st.1))
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
        let columns = "file_id, part, start_offset, end_offset, committed_offset, next_line, load_id"
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
                    RETURNING r.file_id, r.part, r.start_offset, r.end_offset, r.committed_offset, r.next_line,
                              r.load_id
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
            let load = try row.decode(Int64.self, 6)
            // The file where the ledger says it is now (a later registration follows renames), or
            // found in the folder by its first line if it was rotated since.
            let path: String
            let gzip: Bool
            do {
                (path, gzip) = try locate(pg: pg, settings: s, file: file, end: end, log: log)
            } catch {
                try? LoadLog(pg: pg, schema: s.loads).broke(load, error: "\(error)")
                throw error
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
                    UPDATE \(s.loads).weblog_range SET state = 'done', updated_at = clock_timestamp(),
                           loaded_at = clock_timestamp()
                    WHERE file_id = $1 AND part = $2 AND owner = $3
                    """, [file, part, owner])
                continue
            }
            do {
                let reader = try LineReader(path: path, from: committed, end: end, gzip: gzip)
                var finished = false
                while !finished {
                    try checkDeadline()
                    var rejects: [Rejection] = []
                    var read: Int64 = 0
                    var loaded: Int64 = 0
                    var offset = committed
                    var line = nextLine
                    var earliest = Int64.max
                    var latest = Int64.min
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
                                    earliest = min(earliest, rec.timestamp)
                                    latest = max(latest, rec.timestamp)
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
                            // The file ended before the range did: it lost bytes since it was registered.
                            if reachedEnd && reader.offset < end {
                                throw PipelineError(
                                    "\(path) ends at byte \(reader.offset) (decompressed, if gzipped), before"
                                        + " the end of its registered range \(part) at byte \(end): a loaded log"
                                        + " must not lose bytes."
                                        + " Fix: restore the file, then clear the load_part tasks")
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
                                state = CASE WHEN $9 THEN 'done' ELSE 'loading' END, updated_at = clock_timestamp(),
                                loaded_at = CASE WHEN $9 THEN clock_timestamp() END,
                                first_day = CASE WHEN $11::date IS NULL THEN first_day
                                                 WHEN first_day IS NULL OR first_day = '-infinity' THEN $11::date
                                                 ELSE least(first_day, $11::date) END,
                                last_day = greatest(last_day, $12::date)
                            WHERE file_id = $1 AND part = $2 AND owner = $3 AND committed_offset = $10
                            """,
                            [
                                file, part, owner, min(offset, end), line, read, loaded, Int64(rejects.count), done,
                                committed, loaded > 0 ? Self.day(earliest) : nil, loaded > 0 ? Self.day(latest) : nil,
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
                // A statement cancelled by a cancel of the task says why in the operator's words.
                var why = "\(error)"
                do { try checkDeadline() } catch { why = "\(error) (\(why))" }
                try? loads.broke(load, error: "range \(part): \(why)")
                throw error
            }
        }
    }

    /// `YYYY-MM-DD` (UTC) of a Unix time.
    static func day(_ seconds: Int64) -> String {
        Day(epochSeconds: seconds).description
    }

    /// Where ledger file `file` is now: its recorded path when that still holds it (its first line,
    /// and for a plain file at least `end` bytes), else the log file in the weblog folder
    /// that does (it was rotated after registration; the ledger is updated). Whether it is gzipped.
    static func locate(
        pg: PostgresConnection, settings s: PipelineSettings, file: Int64, end: Int64, log: (String) -> Void
    ) throws -> (String, Bool) {
        let f = try pg.query(
            "SELECT path, gzip, first_line_hash, name FROM \(s.loads).weblog_file WHERE id = $1", [file]
        ).rows[0]
        let recorded = try f.decode(String.self, 0)
        let first = try f.decode(String?.self, 2)
        func holds(_ path: String, gzip: Bool) throws -> Bool {
            guard let st = fileStat(path), st.regular, gzip || st.size >= end else { return false }
            guard let first, first != "unknown" else { return true }  // a first-ledger file: size only
            return try firstLineHash(
                path: path, gzip: gzip, final: isFinal(name: String(path.split(separator: "/").last ?? ""))) == first
        }
        let recordedGzip = try f.decode(Bool.self, 1)
        if try holds(recorded, gzip: recordedGzip) { return (recorded, recordedGzip) }
        if first != nil && first != "unknown" {
            for name in logFiles(s.weblogDir) {
                let path = "\(s.weblogDir)/\(name)"
                let gzip = ByteSource.isGzipName(name)
                guard path != recorded, try holds(path, gzip: gzip) else { continue }
                try pg.query(
                    // (No modification time: the next registration looks at it again, under its new name.)
                    "UPDATE \(s.loads).weblog_file SET path = $2, name = $3, gzip = $4, mtime_ns = NULL WHERE id = $1",
                    [file, path, name, gzip])
                log("ledger file \(file) (\(recorded)) is \(path) now")
                return (path, gzip)
            }
        }
        let size = fileStat(recorded).map { "\($0.size) bytes" } ?? "missing"
        throw PipelineError(
            "\(recorded) (ledger file \(file)) is \(size) and does not hold the registered bytes up to \(end)"
                + " (missing, shorter, or starting with another line), and no log file in \(s.weblogDir)"
                + " does: a loaded log must not change. Fix: restore the file (under any access_log* or"
                + " access.log* name in that folder), or give new data a new file name; then clear the load_part"
                + " tasks"
        )
    }

    public struct Finalized: Sendable {
        /// Segments whose load closed now.
        public var files: [(name: String, read: Int64, loaded: Int64, rejected: Int64)] = []
        /// Files with ranges still loading or pending.
        public var unfinished = 0
        /// Files with segments this run registered whose ranges are not all loaded yet (another
        /// run's loader may hold some): the run's load is not complete.
        public var unfinishedOwn = 0
        /// Files this run's registration refused (their loaded bytes changed), with the reasons.
        public var refused: [String] = []
    }

    /// Closes the load of each segment whose ranges are all done, and marks files with every range
    /// done loaded. Ranges another run is loading are left to that run.
    public static func finalize(pg: PostgresConnection, settings s: PipelineSettings, runID: Int64) throws -> Finalized
    {
        var out = Finalized()
        out.unfinishedOwn = try pg.query(
            """
            SELECT count(DISTINCT r.file_id) FROM \(s.loads).weblog_range r JOIN \(s.loads).load l ON l.id = r.load_id
            WHERE l.run_id = $1 AND r.state <> 'done'
            """, [runID]
        ).rows[0].decode(Int.self, 0)
        let rows = try pg.query(
            """
            SELECT r.load_id, f.name, sum(r.rows_read)::bigint, sum(r.rows_loaded)::bigint,
                   sum(r.rows_rejected)::bigint, bool_and(r.state = 'done'), f.id
            FROM \(s.loads).weblog_file f JOIN \(s.loads).weblog_range r ON r.file_id = f.id
            JOIN \(s.loads).load l ON l.id = r.load_id
            WHERE f.state <> 'loaded' AND l.state <> 'finished' GROUP BY r.load_id, f.id ORDER BY f.id, r.load_id
            """
        ).rows
        var unfinished = Set<Int64>()
        for r in rows {
            guard try r.decode(Bool.self, 5) else {
                unfinished.insert(try r.decode(Int64.self, 6))
                continue
            }
            let (load, name) = (try r.decode(Int64.self, 0), try r.decode(String.self, 1))
            let (read, loaded, rejected) = (
                try r.decode(Int64.self, 2), try r.decode(Int64.self, 3), try r.decode(Int64.self, 4)
            )
            try pg.query(
                """
                UPDATE \(s.loads).load SET state = 'finished', finished_at = clock_timestamp(), rows_read = $2,
                       rows_loaded = $3, rows_rejected = $4 WHERE id = $1
                """, [load, read, loaded, rejected])
            out.files.append((name, read, loaded, rejected))
        }
        try pg.query(
            """
            UPDATE \(s.loads).weblog_file f SET state = 'loaded', loaded_at = clock_timestamp()
            WHERE state <> 'loaded'
              AND NOT EXISTS (SELECT 1 FROM \(s.loads).weblog_range r WHERE r.file_id = f.id AND r.state <> 'done')
            """)
        out.unfinished = unfinished.count
        out.refused = try pg.query(
            """
            SELECT coalesce(l.error, s.path) FROM \(s.loads).weblog_seen s
            LEFT JOIN \(s.loads).load l ON l.id = s.load_id
            WHERE s.verdict = 'refused' AND s.run_id = $1 ORDER BY s.path
            """, [runID]
        ).rows.map { try $0.decode(String.self, 0) }
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
    /// A day from the ledger: '-infinity' (a range none of whose first lines has a time) is the
    /// year 1, before any log.
    static func ledgerDay(_ text: String?) -> Day? {
        guard let text else { return nil }
        return text == "-infinity" ? Day(year: 1, month: 1, day: 1) : Day(strict: text)
    }

    /// The earliest day that may have lines in a registered range not loaded to its end (nil:
    /// every range is), whichever run registered it: the least `first_day` of those ranges.
    public static func pendingFrom(pg: PostgresConnection, settings s: PipelineSettings) throws -> Day? {
        let r = try pg.query(
            """
            SELECT min(coalesce(first_day, '-infinity'::date))::text FROM \(s.loads).weblog_range
            WHERE state <> 'done'
            """)
        return ledgerDay(try r.rows.first?.decode(String?.self, 0))
    }

    /// The latest day D such that every registered range that may have lines on or before D is
    /// loaded: the day before the latest loaded line's day (a log may still be adding lines to that
    /// day), and before the first pending day (nil: nothing is loaded, or a pending range's first
    /// day is unknown). From the ledger only.
    public static func watermark(pg: PostgresConnection, settings s: PipelineSettings) throws -> Day? {
        let r = try pg.query(
            """
            SELECT CASE WHEN done.last_day IS NULL OR open.first_day = '-infinity' THEN NULL
                        ELSE least(done.last_day - 1, open.first_day - 1) END::text
            FROM (SELECT max(last_day) AS last_day FROM \(s.loads).weblog_range WHERE state = 'done') done,
                 (SELECT min(coalesce(first_day, '-infinity'::date)) AS first_day FROM \(s.loads).weblog_range
                  WHERE state <> 'done') open
            """)
        return ledgerDay(try r.rows.first?.decode(String?.self, 0))
    }
}
