import Crypto
import ETLSupport
import Foundation
import Orchestration
import PostgresClient
import TestSupport
import Testing

@testable import Tasks

/// Access logs as Apache and logrotate write them (issue 14): a file that grows, is renamed,
/// rotated and gzipped loads every line once; a file whose loaded bytes changed is refused.
@Suite("Weblog files: growth, rotation, gzip, refusals", .serialized, .timeLimit(.minutes(10)))
struct WeblogFilesTests {
    /// Line `i` of a test log: a request for `/p/<i>`, on day `day` of June 2024.
    static func line(_ i: Int, day: Int = 10) -> String {
        let (h, m, s) = (i / 3600 % 24, i / 60 % 60, i % 60)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "10.0.\(i / 256 % 256).\(i % 256) - u\(i) [\(two(day))/Jun/2024:\(two(h)):\(two(m)):\(two(s)) +0000]"
            + " \"GET /p/\(i) HTTP/1.1\" 200 1 \"-\" \"agent\""
    }

    static func lines(_ range: ClosedRange<Int>, day: Int = 10) -> String {
        range.map { line($0, day: day) + "\n" }.joined()
    }

    struct Outcome {
        var registered: WeblogLoad.Registered
        var part: WeblogLoad.PartResult
        var finalized: WeblogLoad.Finalized
    }

    /// One weblog run's register, load and finalize.
    @discardableResult
    func load(_ fx: PipelineFixture, run: Int64) throws -> Outcome {
        let pg = fx.pg!
        let r = try WeblogLoad.register(pg: pg, settings: fx.settings, runID: run, logicalDate: nil, log: { _ in })
        let p = try WeblogLoad.loadPart(
            pg: pg, settings: fx.settings, owner: "run \(run)/load_part_0", checkDeadline: {}, log: { _ in })
        let f = try WeblogLoad.finalize(pg: pg, settings: fx.settings, runID: run)
        #expect(f.unfinished == 0 && f.unfinishedOwn == 0)
        return Outcome(registered: r, part: p, finalized: f)
    }

    func append(_ path: String, _ text: String) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? h.close() }
        try h.seekToEnd()
        try h.write(contentsOf: Data(text.utf8))
    }

    func gzip(_ path: String) throws {
        let r = try TestServices.run("/usr/bin/gzip", ["-n", path])
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// The requested paths of the stored rows, each once, and the rows' keys unique.
    func stored(_ fx: PipelineFixture) throws -> [String] {
        let s = fx.settings
        #expect(
            try fx.count("SELECT count(*) FROM \(s.datalake).weblogs")
                == fx.count("SELECT count(*) FROM (SELECT DISTINCT file_id, line_number FROM \(s.datalake).weblogs) d"))
        return try fx.pg!.query("SELECT path FROM \(s.datalake).weblogs ORDER BY file_id, line_number").rows.map {
            try $0.decode(String.self, 0)
        }
    }

    func paths(_ range: ClosedRange<Int>) -> [String] { range.map { "/p/\($0)" } }

    @Test("a grown log loads only its new complete lines, numbered on; a trailing line without newline waits")
    func grownLog() throws {
        let fx = try PipelineFixture(extra: ["ETL_WEBLOG_CHUNK_LINES": "300", "ETL_WEBLOG_RANGE_MB": "1"])
        let s = fx.settings
        let path = try fx.write("apache-logs/access_log", Self.lines(1...2000))
        let first = try load(fx, run: 1)
        #expect(first.registered.newFiles == ["access_log"] && first.part.read == 2000)
        #expect(try stored(fx) == paths(1...2000))
        // 500 more lines, the last one still being written (no newline).
        try append(path, Self.lines(2001...2499) + Self.line(2500))
        let second = try load(fx, run: 2)
        #expect(second.registered.grown == ["access_log"] && second.registered.newFiles.isEmpty)
        #expect(second.part.read == 499)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == 2499)
        #expect(try stored(fx) == paths(1...2499))
        // Unchanged since: not read again.
        #expect(try load(fx, run: 3).part.read == 0)
        // The line is finished.
        try append(path, "\n")
        let third = try load(fx, run: 4)
        #expect(third.part.read == 1)
        #expect(try stored(fx) == paths(1...2500))
        // Line numbers are the file's.
        #expect(try fx.count("SELECT max(line_number) FROM \(s.datalake).weblogs") == 2500)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file") == 1)
        // One load per segment, each naming its bytes, and the view lists the three segments.
        let loads = try fx.pg!.query(
            "SELECT source, rows_read, state FROM \(s.loads).load WHERE pipeline = 'weblog' ORDER BY id"
        ).rows.map {
            "\(try $0.decode(String.self, 0)) \(try $0.decode(Int64.self, 1)) \(try $0.decode(String.self, 2))"
        }
        let size = Int64(Self.lines(1...2000).utf8.count)
        let size2 = Int64(Self.lines(1...2499).utf8.count)
        #expect(
            loads == [
                "\(path) bytes 0..\(size) 2000 finished", "\(path) bytes \(size)..\(size2) 499 finished",
                "\(path) bytes \(size2)..\(size2 + Int64(Self.line(2500).utf8.count) + 1) 1 finished",
            ])
        let segments = try fx.pg!.query(
            """
            SELECT segment, first_line, lines, rows_read, first_day::text, last_day::text, loaded_at IS NOT NULL
            FROM \(s.loads).weblog_change ORDER BY segment
            """
        ).rows.map {
            [
                "\(try $0.decode(Int.self, 0))", "\(try $0.decode(Int64.self, 1))", "\(try $0.decode(Int64.self, 2))",
                "\(try $0.decode(Int64.self, 3))", try $0.decode(String.self, 4), try $0.decode(String.self, 5),
                "\(try $0.decode(Bool.self, 6))",
            ]
        }
        #expect(
            segments == [
                ["0", "1", "2000", "2000", "2024-06-10", "2024-06-10", "true"],
                ["1", "2001", "499", "499", "2024-06-10", "2024-06-10", "true"],
                ["2", "2500", "1", "1", "2024-06-10", "2024-06-10", "true"],
            ])
    }

    @Test("rotation: renamed with lines appended, a new file under the old name, gzipped, rotated again mid-load")
    func rotation() throws {
        let fx = try PipelineFixture()
        let s = fx.settings
        let dir = s.weblogDir
        let log = try fx.write("apache-logs/access_log", Self.lines(1...300))
        #expect(try load(fx, run: 1).part.read == 300)
        // logrotate: 100 more lines were written before the rename; Apache starts a new access_log.
        try append(log, Self.lines(301...400))
        try FileManager.default.moveItem(atPath: log, toPath: "\(dir)/access_log.1")
        try fx.write("apache-logs/access_log", Self.lines(1001...1050))
        let rotated = try load(fx, run: 2)
        #expect(rotated.registered.newFiles == ["access_log"] && rotated.registered.grown == ["access_log.1"])
        #expect(rotated.part.read == 150)
        #expect(try stored(fx) == paths(1...400) + paths(1001...1050))
        // The old one gzipped (the original removed): the same file, nothing new.
        try gzip("\(dir)/access_log.1")
        let zipped = try load(fx, run: 3)
        #expect(zipped.part.read == 0 && zipped.registered.newFiles.isEmpty && zipped.registered.grown.isEmpty)
        #expect(
            try fx.pg!.query("SELECT path, gzip FROM \(s.loads).weblog_file ORDER BY id").rows.map {
                "\(try $0.decode(String.self, 0)) \(try $0.decode(Bool.self, 1))"
            } == ["\(dir)/access_log.1.gz true", "\(dir)/access_log false"])
        // The next rotation: access_log grew by 10 lines, the last without newline; it is registered,
        // then rotated (renamed access_log.1) before the loaders run.
        try append("\(dir)/access_log", Self.lines(1051...1059) + Self.line(1060))
        let registered = try WeblogLoad.register(pg: fx.pg!, settings: s, runID: 4, logicalDate: nil, log: { _ in })
        #expect(registered.grown == ["access_log"] && registered.ranges == 1)
        try FileManager.default.moveItem(atPath: "\(dir)/access_log.1.gz", toPath: "\(dir)/access_log.2.gz")
        try FileManager.default.moveItem(atPath: "\(dir)/access_log", toPath: "\(dir)/access_log.1")
        let part = try WeblogLoad.loadPart(
            pg: fx.pg!, settings: s, owner: "run 4/load_part_0", checkDeadline: {}, log: { _ in })
        #expect(part.read == 9)  // the registered lines; the unterminated one was not registered
        _ = try WeblogLoad.finalize(pg: fx.pg!, settings: s, runID: 4)
        // The next run finds both under their new names. Apache may still be writing to the renamed
        // file until its reload, so the unterminated line still waits.
        let renamed = try load(fx, run: 5)
        #expect(renamed.part.read == 0 && renamed.registered.newFiles.isEmpty && renamed.registered.refused.isEmpty)
        #expect(try stored(fx) == paths(1...400) + paths(1001...1059))
        // Apache ends the line (and the file, at its reload): it loads now, once.
        try append("\(dir)/access_log.1", "\n")
        let ended = try load(fx, run: 6)
        #expect(ended.registered.grown == ["access_log.1"] && ended.part.read == 1)
        #expect(try stored(fx) == paths(1...400) + paths(1001...1060))
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_file") == 2)
        // Gzipped later: the same file, nothing new; then nothing changed: not even read.
        try gzip("\(dir)/access_log.1")
        #expect(try load(fx, run: 7).part.read == 0)
        let again = try load(fx, run: 8)
        #expect(again.part.read == 0 && again.registered.alreadyKnown.count == 2)
        #expect(try stored(fx) == paths(1...400) + paths(1001...1060))
    }

    @Test("a loaded file changed (a byte altered, same size) is refused with the reason; the other files load")
    func changedFileRefused() throws {
        let fx = try PipelineFixture()
        let s = fx.settings
        let text = Self.lines(1...100)
        let old = try fx.write("apache-logs/access_log_20240610T000000.log", text)
        #expect(try load(fx, run: 1).part.read == 100)
        // Line 50's path changes from /p/50 to /p/59: same size, and a later modification time.
        var bytes = Array(text.utf8)
        let at = bytes.count / 2
        let slash = bytes[at...].firstIndex(of: UInt8(ascii: "/"))!
        let digit = bytes[slash...].firstIndex(where: { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "8") })!
        bytes[digit] += 1
        try Data(bytes).write(to: URL(fileURLWithPath: old))
        try FileManager.default.setAttributes(
            [.modificationDate: Date().addingTimeInterval(60)], ofItemAtPath: old)
        try fx.write("apache-logs/access_log_20240611T000000.log", Self.lines(201...220, day: 11))
        let r = try WeblogLoad.register(pg: fx.pg!, settings: s, runID: 2, logicalDate: nil, log: { _ in })
        #expect(r.newFiles == ["access_log_20240611T000000.log"] && r.refused.count == 1)
        let p = try WeblogLoad.loadPart(
            pg: fx.pg!, settings: s, owner: "run 2/load_part_0", checkDeadline: {}, log: { _ in })
        #expect(p.read == 20)
        let f = try WeblogLoad.finalize(pg: fx.pg!, settings: s, runID: 2)
        #expect(f.refused.count == 1 && f.refused[0].contains(old), "\(f.refused)")
        #expect(try stored(fx) == paths(1...100) + paths(201...220))
        let broken = try fx.pg!.query(
            "SELECT source, error FROM \(s.loads).load WHERE state = 'broken'"
        ).rows
        #expect(broken.count == 1)
        let error = try broken.first.map { try $0.decode(String.self, 1) } ?? ""
        #expect(error.contains(old) && error.contains("bytes 0..\(text.utf8.count)") && error.contains("changed"))
        #expect(error.contains("Fix: restore the file as it was, or move the new data to a new file"))
        // The next run refuses it again (the run fails) but records it once.
        let again = try load(fx, run: 3)
        #expect(again.registered.refused.count == 1 && again.finalized.refused.count == 1 && again.part.read == 0)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE state = 'broken'") == 1)
        // Moved away, the same run retried (register, then finalize): it no longer fails.
        let changed = try Data(contentsOf: URL(fileURLWithPath: old))
        try FileManager.default.moveItem(atPath: old, toPath: "\(fx.path)/aside.log")
        let retried = try load(fx, run: 3)
        #expect(retried.registered.refused.isEmpty && retried.finalized.refused.isEmpty)
        try changed.write(to: URL(fileURLWithPath: old))
        #expect(try load(fx, run: 3).finalized.refused.count == 1)  // and back: refused again
        // Restored: the same file again, nothing refused, nothing loaded twice.
        try Data(text.utf8).write(to: URL(fileURLWithPath: old))
        let restored = try load(fx, run: 4)
        #expect(restored.registered.refused.isEmpty && restored.finalized.refused.isEmpty)
        #expect(restored.part.read == 0)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_seen") == 0)
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == 120)
    }

    @Test("a gzipped file never seen before loads in full, last line without newline included; a stopped load resumes")
    func gzippedNewFile() throws {
        let fx = try PipelineFixture(extra: ["ETL_WEBLOG_CHUNK_LINES": "100"])
        let s = fx.settings
        let path = try fx.write("apache-logs/access_log-20240601", Self.lines(1...999) + Self.line(1000))
        try gzip(path)
        _ = try WeblogLoad.register(pg: fx.pg!, settings: s, runID: 1, logicalDate: nil, log: { _ in })
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).weblog_range") == 1)  // one range for a .gz
        // Stopped after 3 chunks, as a killed loader; the next attempt decompresses and skips to its offset.
        var checks = 0
        #expect(throws: TaskTimeout.self) {
            _ = try WeblogLoad.loadPart(
                pg: fx.pg!, settings: s, owner: "run 1/load_part_0",
                checkDeadline: {
                    checks += 1
                    if checks > 4 { throw TaskTimeout() }
                }, log: { _ in })
        }
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == 300)
        let rest = try WeblogLoad.loadPart(
            pg: fx.pg!, settings: s, owner: "run 1/load_part_0", checkDeadline: {}, log: { _ in })
        #expect(rest.read == 700)
        _ = try WeblogLoad.finalize(pg: fx.pg!, settings: s, runID: 1)
        #expect(try stored(fx) == paths(1...1000))
        let size = Self.lines(1...999).utf8.count + Self.line(1000).utf8.count
        #expect(
            try fx.pg!.query("SELECT source, state FROM \(s.loads).load").rows.map {
                "\(try $0.decode(String.self, 0)) \(try $0.decode(String.self, 1))"
            } == ["\(path).gz bytes 0..\(size) finished"])
        #expect(try load(fx, run: 2).part.read == 0)
    }

    @Test("pendingFrom and watermark follow the ranges' days as they register and load")
    func pendingAndWatermark() throws {
        let fx = try PipelineFixture()
        let s = fx.settings
        let pg = fx.pg!
        func days() throws -> String {
            let p = try WeblogLoad.pendingFrom(pg: pg, settings: s)
            let w = try WeblogLoad.watermark(pg: pg, settings: s)
            return "pending \(p.map(\.description) ?? "-"), through \(w.map(\.description) ?? "-")"
        }
        #expect(try days() == "pending -, through -")
        let log = try fx.write("apache-logs/access_log", Self.lines(1...50, day: 10) + Self.lines(51...60, day: 11))
        _ = try WeblogLoad.register(pg: pg, settings: s, runID: 1, logicalDate: nil, log: { _ in })
        #expect(try days() == "pending 2024-06-10, through -")
        _ = try WeblogLoad.loadPart(pg: pg, settings: s, owner: "run 1/load_part_0", checkDeadline: {}, log: { _ in })
        #expect(try days() == "pending -, through 2024-06-10")  // the 11th may still grow
        // New lines of the 12th and 13th, registered, not loaded: complete through the 11th.
        try append(log, Self.lines(61...70, day: 12) + Self.lines(71...80, day: 13))
        _ = try WeblogLoad.register(pg: pg, settings: s, runID: 2, logicalDate: nil, log: { _ in })
        #expect(try days() == "pending 2024-06-12, through 2024-06-10")
        // A file whose first lines have no time: it holds up every day until loaded.
        let garbage = (1...40).map { "not a log line \($0)\n" }.joined()
        try fx.write("apache-logs/access_log_20240614T000000.log", garbage + Self.lines(81...90, day: 9))
        _ = try WeblogLoad.register(pg: pg, settings: s, runID: 2, logicalDate: nil, log: { _ in })
        #expect(try days() == "pending 0001-01-01, through -")
        _ = try WeblogLoad.loadPart(pg: pg, settings: s, owner: "run 2/load_part_0", checkDeadline: {}, log: { _ in })
        _ = try WeblogLoad.finalize(pg: pg, settings: s, runID: 2)
        #expect(try days() == "pending -, through 2024-06-12")
        // The garbage file's range learned its real first day from its loaded lines.
        #expect(
            try pg.query("SELECT min(first_day)::text, max(last_day)::text FROM \(s.loads).weblog_range").rows.map {
                "\(try $0.decode(String.self, 0)) \(try $0.decode(String.self, 1))"
            } == ["2024-06-09 2024-06-13"])
        // Which reports a late segment corrects: one computed for the 12th before it loaded.
        try pg.query(
            """
            INSERT INTO \(s.loads).report_computed (report, logical_date, computed_at)
            VALUES ('popular-devices', '2024-06-12', '2024-01-01'), ('popular-devices', '2024-06-08', '2024-01-01')
            """)
        #expect(
            try fx.count(
                """
                SELECT count(DISTINCT c.logical_date) FROM \(s.loads).report_computed c JOIN \(s.loads).weblog_change w
                  ON w.first_day <= c.logical_date AND (w.loaded_at IS NULL OR w.loaded_at > c.computed_at)
                """) == 1)
    }

    @Test("Debian's names (access.log, access.log.1) are loaded as Apache's are; other names are not looked at")
    func debianNames() throws {
        let fx = try PipelineFixture()
        try fx.write("apache-logs/access.log.1", Self.lines(1...5))
        try fx.write("apache-logs/access.log", Self.lines(6...8))
        try fx.write("apache-logs/error.log", Self.lines(9...9))
        let r = try load(fx, run: 1)
        #expect(r.registered.newFiles.sorted() == ["access.log", "access.log.1"] && r.part.read == 8)
        #expect(try stored(fx).sorted() == paths(1...8).sorted())
    }

    @Test("a gzip file cut short is refused with the reason, the other files load; one written a moment ago waits")
    func corruptGzipRefused() throws {
        let fx = try PipelineFixture()
        let s = fx.settings
        let path = try fx.write("apache-logs/access_log.3", Self.lines(1...3000))
        try gzip(path)
        let gz = try Data(contentsOf: URL(fileURLWithPath: path + ".gz"))
        try gz.prefix(gz.count / 2).write(to: URL(fileURLWithPath: path + ".gz"))  // cut short
        try fx.write("apache-logs/access_log", Self.lines(5001...5010))
        // Written to just now: still being written (gzip > file), so it waits, refused by nothing.
        let first = try load(fx, run: 1)
        #expect(first.registered.newFiles == ["access_log"] && first.part.read == 10)
        #expect(first.registered.waiting == ["access_log.3.gz"] && first.finalized.refused.isEmpty)
        // Last written to an hour ago: cut short, refused.
        try FileManager.default.setAttributes(
            [.modificationDate: Date().addingTimeInterval(-3600)], ofItemAtPath: path + ".gz")
        let r = try load(fx, run: 2)
        #expect(r.registered.newFiles.isEmpty && r.part.read == 0)
        #expect(
            r.finalized.refused.count == 1 && r.finalized.refused[0].contains("\(path).gz"), "\(r.finalized.refused)")
        #expect(r.finalized.refused.first?.contains("gzip") == true)
        #expect(try fx.count("SELECT count(*) FROM \(s.loads).load WHERE state = 'broken'") == 1)
        #expect(try stored(fx) == paths(5001...5010))
    }

    @Test(
        "a ledger of the first version migrates in place: its files are not loaded again, and grow from where they were"
    )
    func oldLedgerMigrates() throws {
        let fx = try PipelineFixture()
        let s = fx.settings
        let pg = fx.pg!
        // The ledger as the first version made it (identity: the whole file's checksum, unique).
        try pg.execute(
            script: """
                DROP VIEW \(s.loads).weblog_change;
                DROP TABLE \(s.loads).weblog_seen, \(s.loads).weblog_range, \(s.loads).weblog_file;
                CREATE TABLE \(s.loads).weblog_file (
                    id bigserial PRIMARY KEY, name text NOT NULL, path text NOT NULL, size bigint NOT NULL,
                    checksum text NOT NULL UNIQUE, lines bigint NOT NULL,
                    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'loading', 'loaded')),
                    load_id bigint REFERENCES \(s.loads).load (id),
                    registered_at timestamptz NOT NULL DEFAULT clock_timestamp(), loaded_at timestamptz);
                CREATE TABLE \(s.loads).weblog_range (
                    file_id bigint NOT NULL REFERENCES \(s.loads).weblog_file (id), part integer NOT NULL,
                    start_offset bigint NOT NULL, end_offset bigint NOT NULL, first_line bigint NOT NULL,
                    committed_offset bigint NOT NULL, next_line bigint NOT NULL,
                    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'loading', 'done')),
                    owner text, rows_read bigint NOT NULL DEFAULT 0, rows_loaded bigint NOT NULL DEFAULT 0,
                    rows_rejected bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                    PRIMARY KEY (file_id, part), CHECK (committed_offset BETWEEN start_offset AND end_offset));
                """)
        // Two files it loaded: one still where it was, one renamed since (to a rotated name).
        let a = try fx.write("apache-logs/access_log_20240610T000000.log", Self.lines(1...100, day: 10))
        let b = try fx.write("apache-logs/access_log-20240611", Self.lines(101...200, day: 11))
        for (id, path, wasPath, day) in [(1, a, a, 10), (2, b, "\(s.weblogDir)/access_log_20240611T000000.log", 11)] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let sum = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
            try pg.query(
                """
                INSERT INTO \(s.loads).load (id, pipeline, source, state, rows_read, rows_loaded)
                VALUES ($1, 'weblog', $2, 'finished', 100, 100)
                """, [Int64(id), wasPath])
            try pg.query(
                """
                INSERT INTO \(s.loads).weblog_file (id, name, path, size, checksum, lines, state, load_id)
                VALUES ($1, $2, $3, $4, $5, 100, 'loaded', $1)
                """, [Int64(id), String(wasPath.split(separator: "/").last!), wasPath, Int64(bytes.count), sum])
            try pg.query(
                """
                INSERT INTO \(s.loads).weblog_range (file_id, part, start_offset, end_offset, first_line,
                    committed_offset, next_line, state, rows_read, rows_loaded)
                VALUES ($1, 0, 0, $2, 1, $2, 101, 'done', 100, 100)
                """, [Int64(id), Int64(bytes.count)])
            try pg.query(
                """
                INSERT INTO \(s.datalake).weblogs
                    (file_id, line_number, client_ip, requested_at, path, status, device, os)
                SELECT $1, n, '10.0.0.1', $2::timestamptz, '/p/' || (n + $3), 200, 'Other', 'Other'
                FROM generate_series(1, 100) n
                """, [Int64(id), "2024-06-\(day) 10:00:00+00", Int64((id - 1) * 100)])
        }
        try pg.query("SELECT setval('\(s.loads).weblog_file_id_seq', 2)")
        try pg.query("SELECT setval('\(s.loads).load_id_seq', 2)")
        // The schema migrates (twice: idempotent).
        try PipelineSchemas.ensure(pg, s)
        try PipelineSchemas.ensure(pg, s)
        #expect(
            try fx.count(
                """
                SELECT count(*) FROM \(s.loads).weblog_file
                WHERE registered_end = size AND prefix_checksum = checksum AND first_line_hash IS NULL
                """) == 2)
        // The old identity's unique checksum is gone (a grown file keeps its row).
        #expect(
            try fx.count(
                """
                SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                WHERE n.nspname = $1 AND c.conname = 'weblog_file_checksum_key'
                """, [s.loads]) == 0)
        let first = try load(fx, run: 1)
        #expect(first.part.read == 0 && first.registered.newFiles.isEmpty && first.registered.alreadyKnown.count == 2)
        #expect(
            try fx.count(
                "SELECT count(*) FROM \(s.loads).weblog_file WHERE first_line_hash NOT IN ('unknown')"
            ) == 2)
        #expect(try WeblogLoad.watermark(pg: pg, settings: s) == Day("2024-06-10"))  // the 11th may grow
        // The first grows: its new lines only, numbered on.
        try append(a, Self.lines(201...210, day: 12))
        let grown = try load(fx, run: 2)
        #expect(grown.registered.grown == ["access_log_20240610T000000.log"] && grown.part.read == 10)
        #expect(try stored(fx) == paths(1...100) + paths(201...210) + paths(101...200))  // by file, then line
        #expect(try fx.count("SELECT max(line_number) FROM \(s.datalake).weblogs WHERE file_id = 1") == 110)
        #expect(try WeblogLoad.watermark(pg: pg, settings: s) == Day("2024-06-11"))
    }
    @Test(
        "late lines: a report waits while lines on or before its date load, and one computed before them is out of date"
    )
    func lateLines() throws {
        let fx = try PipelineFixture(extra: ["ETL_HISTORY_START": "2024-06-01"])
        let s = fx.settings
        let pg = fx.pg!
        // The platform through the 12th, so that the b2b watermark is not what the report waits for.
        _ = try PlatformHistory.export(upTo: Day("2024-06-12")!, ordersPerDay: 5, seed: 1, settings: s)
        _ = try B2BLoad.load(pg: pg, settings: s, runID: 1, upTo: Day("2024-06-12")!, log: { _ in })
        var e = fx.values
        e["ETL_PIPELINE_DAGS"] = "true"
        let c = try Cluster(extra: e)  // the metadata tables (dag_run), no processes
        let check = Watermarks.check(Reports.popularDevices, s)
        let at = { (d: String) in Date(timeIntervalSince1970: Double(Day(d)!.epochSeconds)) }
        // A customer's requests (the report counts customers' user names) on the 10th and the 11th.
        let user = try String(contentsOfFile: "\(s.b2bDir)/customer.csv", encoding: .utf8).split(separator: "\n")[1]
            .split(separator: ",").last.map(String.init)!
        let request = { (i: Int, day: Int) in
            Self.line(i, day: day).replacingOccurrences(of: " u\(i) ", with: " \(user) ")
        }
        let log = try fx.write(
            "apache-logs/access_log", (1...20).map { request($0, 10) + "\n" }.joined() + request(21, 11) + "\n")
        _ = try WeblogLoad.register(pg: pg, settings: s, runID: 7, logicalDate: nil, log: { _ in })
        // Registered by another run, not loaded: a report for the 11th waits, one for the 9th does not.
        let waits = try check(pg, c.schema, at("2024-06-11"))
        #expect(waits?.contains("access-log") == true, "\(waits ?? "nil")")
        #expect(try check(pg, c.schema, at("2024-06-09")) == nil)
        _ = try WeblogLoad.loadPart(pg: pg, settings: s, owner: "run 7/load_part_0", checkDeadline: {}, log: { _ in })
        _ = try WeblogLoad.finalize(pg: pg, settings: s, runID: 7)
        #expect(try check(pg, c.schema, at("2024-06-11")) == nil)
        // A weblog run for an earlier date that has not ended holds the report too (it brings files).
        let dag = try #require(c.registry.dag("weblog"))
        let earlier = try #require(try c.store.createRun(dag, logicalDate: at("2024-06-10"), type: .backfill))
        #expect(try check(pg, c.schema, at("2024-06-11"))?.contains("weblog runs for 2024-06-10") == true)
        #expect(try check(pg, c.schema, at("2024-06-09")) == nil)
        try pg.query("UPDATE \(c.schema).dag_run SET state = 'success' WHERE run_id = $1", [earlier])
        #expect(try check(pg, c.schema, at("2024-06-11")) == nil)

        // Computed now, then late lines of the 10th arrive (the file grew): the 11th's report read
        // a corrected input and is out of date; the 9th's did not.
        for d in ["2024-06-09", "2024-06-11"] {
            _ = try Reports.run(Reports.popularDevices, date: Day(d)!, tx: pg, settings: s)
        }
        #expect(try Freshness.computed(pg: pg, settings: s).allSatisfy { $0.outOfDate.isEmpty })
        let before = try Reports.rows(Reports.popularDevices, date: Day("2024-06-11")!, pg: pg, settings: s)
        try append(log, (22...30).map { request($0, 10) + "\n" }.joined())
        _ = try WeblogLoad.register(pg: pg, settings: s, runID: 8, logicalDate: nil, log: { _ in })
        _ = try WeblogLoad.loadPart(pg: pg, settings: s, owner: "run 8/load_part_0", checkDeadline: {}, log: { _ in })
        _ = try WeblogLoad.finalize(pg: pg, settings: s, runID: 8)
        let status = Dictionary(
            uniqueKeysWithValues: try Freshness.computed(pg: pg, settings: s).map { ($0.date, $0.outOfDate) })
        #expect(status["2024-06-11"]?.first?.contains("access log access_log (lines from 2024-06-10)") == true)
        #expect(status["2024-06-09"] == [])
        // Recomputed by a backfill, it counts the late requests.
        _ = try Reports.run(Reports.popularDevices, date: Day("2024-06-11")!, tx: pg, settings: s)
        let after = try Reports.rows(Reports.popularDevices, date: Day("2024-06-11")!, pg: pg, settings: s)
        #expect(before != after, "\(before) \(after)")
        #expect(try Freshness.computed(pg: pg, settings: s, date: Day("2024-06-11")!).first?.outOfDate == [])
    }
}
