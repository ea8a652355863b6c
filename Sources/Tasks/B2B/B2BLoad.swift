import Crypto
import ETLSupport
import Foundation
import PostgresClient

/// The b2b load: the platform's history accumulates in the datalake, one export day at a time.
///
/// The first run loads every day from `ETL_HISTORY_START` (whose dimensions are the base CSVs) up to
/// its logical date: the initial load. Later runs load only the days not loaded yet. Each day commits
/// on its own, with its ledger row (`loads.b2b_day`), so a load that breaks or is killed keeps the
/// days it finished and the next attempt goes on from there; a day in the ledger is never loaded
/// twice (a redelivered or retried task finds it there, under the load's lock).
///
/// A day's dimension rows are merged into the type-2 tables (see `sources/ddl/datalake.sql`): a
/// key not there is inserted; a row that differs from the current version ends that version on the
/// day and starts a new one; an equal row is counted unchanged; a removed catalog row gets its end
/// date. Its orders and sales are appended, checked against the versions valid on the day.
///
/// A re-exported day (its files changed since they were loaded: the signature of names, sizes and
/// modification times differs, then the checksums) replaces that day's orders and sales only. A day
/// whose dimension rows changed after it was loaded is refused: later versions were built on it.
public enum B2BLoad {
    /// The tables, in the order a day loads them.
    static let dimensions = Array(B2B.tables.prefix(4))
    static let facts = Array(B2B.tables.suffix(2))

    public struct Result: Sendable {
        public var tables: [B2B.TableResult] = (B2B.tables).map { B2B.TableResult(table: $0.table) }
        public var daysLoaded: [Day] = []
        public var daysReplaced: [Day] = []
        public var daysUnchanged = 0
    }

    /// One day's files: the base CSVs on the first day, then the day's export folder.
    struct DayFiles {
        let day: Day
        var dimensions: [(spec: CSVTableSpec, path: String)] = []
        var removed: String?
        var orders: String?
        var sales: String?

        var all: [String] { dimensions.map(\.path) + [removed, orders, sales].compactMap { $0 } }
    }

    static func files(of day: Day, _ s: PipelineSettings) -> DayFiles? {
        var f = DayFiles(day: day)
        let fm = FileManager.default
        let dir = PlatformHistory.dayDir(day, s)
        let exported = fm.fileExists(atPath: dir)
        guard exported || day == s.historyStart else { return nil }
        if day == s.historyStart {
            f.dimensions = dimensions.map { ($0, "\(s.b2bDir)/\($0.file)") }
        }
        if exported {
            for spec in dimensions where fm.fileExists(atPath: "\(dir)/\(spec.file)") {
                f.dimensions.append((spec, "\(dir)/\(spec.file)"))
            }
            let removed = "\(dir)/\(B2B.inventoryRemoved.file)"
            if fm.fileExists(atPath: removed) { f.removed = removed }
            for name in ["orders.csv", "sales.csv"] where fm.fileExists(atPath: "\(dir)/\(name)") {
                if name == "orders.csv" { f.orders = "\(dir)/\(name)" } else { f.sales = "\(dir)/\(name)" }
            }
        }
        return f
    }

    /// Names, sizes and modification times: unchanged files are not read again.
    static func signature(_ paths: [String]) -> String {
        paths.map { p in
            let a = try? FileManager.default.attributesOfItem(atPath: p)
            let size = (a?[.size] as? Int) ?? -1
            let mtime = (a?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(p):\(size):\(mtime)"
        }.joined(separator: ";")
    }

    /// `file=sha256;...` per file (base files as `base/<file>`), so a change can be named.
    static func checksums(_ paths: [String], _ s: PipelineSettings) throws -> String {
        try paths.map { p in
            var hasher = SHA256()
            guard let h = FileHandle(forReadingAtPath: p) else {
                throw PipelineError("cannot read \(p): check that the file exists and is readable")
            }
            defer { try? h.close() }
            while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
            let name = (p as NSString).lastPathComponent
            return "\(p.hasPrefix(s.b2bDir + "/") ? "base/" : "")\(name)=\(Hex.encode(hasher.finalize()))"
        }.joined(separator: ";")
    }

    /// The files whose checksums differ between two `checksums` texts.
    static func changedFiles(_ a: String, _ b: String) -> [String] {
        func parse(_ t: String) -> [String: String] {
            Dictionary(
                t.split(separator: ";").map { $0.split(separator: "=", maxSplits: 1).map(String.init) }
                    .filter { $0.count == 2 }.map { ($0[0], $0[1]) }
            ) { x, _ in x }
        }
        let (x, y) = (parse(a), parse(b))
        return Set(x.keys).union(y.keys).filter { x[$0] != y[$0] }.sorted()
    }

    struct LedgerRow {
        let signature: String
        let facts: String
        let dims: String
    }

    /// Loads every day up to `last` not loaded yet, and the re-exported ones, on `pg` (a connection
    /// of its own: each day commits). Load records (one per table) show the run's progress.
    public static func load(
        pg: PostgresConnection, settings s: PipelineSettings, runID: Int64?, upTo last: Day,
        log: (String) -> Void, checkDeadline: () throws -> Void = {}
    ) throws -> Result {
        guard last >= s.historyStart else {
            throw PipelineError(
                "b2b for \(last) is before the platform's history starts (ETL_HISTORY_START=\(s.historyStart)): "
                    + "there is no export to load. Fix: run it for \(s.historyStart) or later, or set "
                    + "ETL_HISTORY_START to a day on or before \(last) (the base CSVs are the platform on that day)")
        }
        let loads = LoadLog(pg: pg, schema: s.loads)
        // One b2b load at a time, for the whole load (released when the session ends, a killed
        // worker's included).
        // Waiting for another b2b load may take as long as it runs (a frozen holder's lock is
        // ended by the take-over of its attempt): no lock_timeout for this wait.
        let session = pg.sessions
        try pg.query("SET lock_timeout = 0")
        try pg.query("SELECT pg_advisory_lock(hashtext($1))", ["\(s.loads) b2b load"])
        try pg.query("RESET lock_timeout")
        defer { _ = try? pg.query("SELECT pg_advisory_unlock(hashtext($1))", ["\(s.loads) b2b load"]) }
        try loads.markAbandoned(pipeline: "b2b")
        // The history loaded so far starts on ETL_HISTORY_START; another start would merge the base
        // CSVs into a history they are not the first day of.
        if let first = try pg.query("SELECT min(day)::text FROM \(s.loads).b2b_day").rows.first?
            .decode(String?.self, 0).flatMap({ Day(strict: $0) }), first != s.historyStart
        {
            throw PipelineError(
                "the loaded b2b history starts on \(first), but ETL_HISTORY_START=\(s.historyStart): the base CSVs "
                    + "are the platform on the history's first day. Fix: set ETL_HISTORY_START=\(first) for every "
                    + "program (scheduler and workers alike), or load the new history into new schemas "
                    + "(ETL_DATALAKE_SCHEMA, ETL_LOADS_SCHEMA, ETL_DATAMART_SCHEMA)")
        }
        var ids: [String: Int64] = [:]
        for t in B2B.tables {
            let base = dimensions.contains { $0.table == t.table }
            ids[t.table] = try loads.begin(
                pipeline: "b2b",
                source: base
                    ? "\(s.b2bDir)/\(t.file) + \(s.exportDir)/day=*/\(t.file)" : "\(s.exportDir)/day=*/\(t.file)",
                runID: runID, logicalDate: last.description)
        }
        var result = Result()
        do {
            // The dimensions' stage tables, made once for the load's session (not once a day: making
            // and dropping temporary tables costs the catalog work of real ones).
            for spec in dimensions + [B2B.inventoryRemoved] {
                let t = spec.table == B2B.inventoryRemoved.table ? "inventory" : spec.table
                try pg.execute(
                    script: """
                        DROP TABLE IF EXISTS pg_temp.\(stage(spec));
                        CREATE TEMP TABLE \(stage(spec)) AS SELECT \(spec.columns.map(\.name).joined(separator: ", "))
                        FROM \(s.datalake).\(t) WITH NO DATA
                        """)
            }
            try loadDays(
                pg: pg, s: s, runID: runID, last: last, ids: ids, result: &result, log: log,
                checkDeadline: {
                    try checkDeadline()
                    // A reconnect between two days drops the session's lock: start again under it.
                    guard pg.sessions == session else {
                        throw PostgresError(
                            code: .connectionLost,
                            message: "the session holding the b2b load lock was replaced by a reconnect; the load "
                                + "starts again under the lock, from the days already committed",
                            endpoint: pg.endpoint)
                    }
                })
            let range =
                result.daysLoaded.isEmpty && result.daysReplaced.isEmpty
                ? "no new day"
                : "days " + describe(result.daysLoaded + result.daysReplaced)
            for t in B2B.tables {
                try pg.query(
                    """
                    UPDATE \(s.loads).load SET state = 'finished', finished_at = clock_timestamp(),
                           source = source || ' (' || $2 || ')' WHERE id = $1
                    """, [ids[t.table]!, range])
            }
            return result
        } catch {
            // A statement cancelled by a cancel of the task says why in the operator's words.
            var why = "\(error)"
            do { try checkDeadline() } catch { why = "\(error) (\(why))" }
            for (_, id) in ids { try? loads.broke(id, error: why) }
            throw error
        }
    }

    /// "2025-01-01..2026-11-30" for a run of days, else the days listed.
    static func describe(_ days: [Day]) -> String {
        let sorted = days.sorted()
        guard let first = sorted.first, let last = sorted.last else { return "" }
        if last.daysSince1970 - first.daysSince1970 + 1 == sorted.count {
            return sorted.count == 1 ? "\(first)" : "\(first)..\(last)"
        }
        return sorted.map(\.description).joined(separator: ", ")
    }

    /// The days in the ledger (loaded, whether or not their export folders are still there).
    public static func loadedDays(pg: PostgresConnection, _ s: PipelineSettings) throws -> Set<Day> {
        // (No ledger yet, e.g. `etlctl tasks test` on fresh schemas before create_tables: nothing loaded.)
        guard try pg.tableExists("\(s.loads).b2b_day") else { return [] }
        return Set(
            try pg.query("SELECT day::text FROM \(s.loads).b2b_day").rows.compactMap {
                Day(strict: try $0.decode(String.self, 0))
            })
    }

    private static func loadDays(
        pg: PostgresConnection, s: PipelineSettings, runID: Int64?, last: Day, ids: [String: Int64],
        result: inout Result, log: (String) -> Void, checkDeadline: () throws -> Void
    ) throws {
        var ledger: [Day: LedgerRow] = [:]
        for r in try pg.query("SELECT day::text, signature, facts_checksum, dims_checksum FROM \(s.loads).b2b_day").rows
        {
            if let d = Day(strict: try r.decode(String.self, 0)) {
                ledger[d] = LedgerRow(
                    signature: try r.decode(String.self, 1), facts: try r.decode(String.self, 2),
                    dims: try r.decode(String.self, 3))
            }
        }
        let latest = ledger.keys.max()
        // The keys of the current versions, for the checks of references; kept up to date as days load.
        var current = try keys(pg: pg, s: s, validOn: nil)
        var day = s.historyStart
        var archived: [Day] = []
        while day <= last {
            try checkDeadline()
            // A loaded day whose export folder is gone (archived, moved away) stays as it was loaded:
            // a missing folder is not a re-export of nothing.
            if ledger[day] != nil, !FileManager.default.fileExists(atPath: PlatformHistory.dayDir(day, s)) {
                archived.append(day)
                result.daysUnchanged += 1
                day = Day(daysSince1970: day.daysSince1970 + 1)
                continue
            }
            guard let files = files(of: day, s) else {
                throw PipelineError(
                    "the platform's export for \(day) is missing (\(PlatformHistory.dayDir(day, s))): days are loaded "
                        + "in order and \(day) is the first one not there. Fix: run the b2b DAG's generate_orders "
                        + "task (ETL_ORDERS > 0 generates the exports), or put that day's export there; "
                        + (day == s.historyStart
                            ? "nothing is loaded yet"
                            : "days up to \(Day(daysSince1970: day.daysSince1970 - 1)) are loaded"))
            }
            let signature = signature(files.all)
            if let known = ledger[day], known.signature == signature {
                result.daysUnchanged += 1
            } else {
                let dims = try checksums(files.dimensions.map(\.path) + [files.removed].compactMap { $0 }, s)
                let facts = try checksums([files.orders, files.sales].compactMap { $0 }, s)
                if let known = ledger[day] {
                    guard known.dims == dims else {
                        throw PipelineError(
                            "the export of \(day) (\(PlatformHistory.dayDir(day, s))"
                                + (day == s.historyStart ? " and the base CSVs in \(s.b2bDir)" : "")
                                + ") changed its dimension rows (companies, products, catalogs or customers: "
                                + changedFiles(known.dims, dims).joined(separator: ", ") + ") after "
                                + "it was loaded, and later versions were built on them. Fix: put the changes in "
                                + "the export of a day not loaded yet, or put the day's files back as they were")
                    }
                    if known.facts == facts {
                        try pg.query(
                            "UPDATE \(s.loads).b2b_day SET signature = $2 WHERE day = $1::date",
                            [day.description, signature])
                        result.daysUnchanged += 1
                    } else {
                        var validOn = try keys(pg: pg, s: s, validOn: day)
                        try pg.transaction { tx in
                            var pending: [String: B2B.TableResult] = [:]
                            let n = try loadFacts(
                                files, replace: true, tx: tx, s: s, known: &validOn, ids: ids, pending: &pending,
                                result: &result)
                            try addCounts(pending, ids: ids, tx: tx, s: s)
                            try tx.query(
                                """
                                UPDATE \(s.loads).b2b_day SET signature = $2, facts_checksum = $3, run_id = $4,
                                       orders = $5, sales_lines = $6, replaced_at = clock_timestamp()
                                WHERE day = $1::date
                                """, [day.description, signature, facts, runID, n.orders, n.sales])
                        }
                        result.daysReplaced.append(day)
                        log("\(day): re-exported; its orders and sales were replaced")
                    }
                } else {
                    if let latest, day < latest, !files.dimensions.isEmpty || files.removed != nil {
                        throw PipelineError(
                            "the export of \(day) arrived after later days (up to \(latest)) were loaded and changes "
                                + "dimension rows, which later versions would have been built on. Fix: move its "
                                + "dimension rows to a day not loaded yet")
                    }
                    var known = latest.map { day < $0 } == true ? try keys(pg: pg, s: s, validOn: day) : current
                    try pg.transaction { tx in
                        // The day's counts go to the load records in one statement at its end.
                        var pending: [String: B2B.TableResult] = [:]
                        for (spec, path) in files.dimensions {
                            try mergeDimension(
                                spec, path: path, day: day, tx: tx, s: s, known: &known, ids: ids,
                                pending: &pending, result: &result)
                        }
                        if let removed = files.removed {
                            try removeCatalogRows(
                                path: removed, day: day, tx: tx, s: s, known: &known, ids: ids,
                                pending: &pending, result: &result)
                        }
                        let n = try loadFacts(
                            files, replace: false, tx: tx, s: s, known: &known, ids: ids, pending: &pending,
                            result: &result)
                        try addCounts(pending, ids: ids, tx: tx, s: s)
                        try tx.query(
                            """
                            INSERT INTO \(s.loads).b2b_day (day, signature, facts_checksum, dims_checksum, orders,
                                                            sales_lines, run_id)
                            VALUES ($1::date, $2, $3, $4, $5, $6, $7)
                            """, [day.description, signature, facts, dims, n.orders, n.sales, runID])
                    }
                    known["orders"] = nil
                    if !(latest.map { day < $0 } ?? false) { current = known }
                    result.daysLoaded.append(day)
                }
            }
            day = Day(daysSince1970: day.daysSince1970 + 1)
        }
        if !archived.isEmpty {
            log("b2b: \(describe(archived)): loaded before, their export folders are gone; kept as they were loaded")
        }
        let t = result.tables.map { "\($0.table) +\($0.loaded)" }.joined(separator: ", ")
        log(
            "b2b: \(result.daysLoaded.count) day(s) loaded, \(result.daysReplaced.count) replaced, "
                + "\(result.daysUnchanged) already loaded; \(t)")
    }

    /// Keys of the versions valid on `day` (nil: the current ones), per referenced table, as the
    /// validator keeps them.
    static func keys(pg: PostgresConnection, s: PipelineSettings, validOn day: Day?) throws -> [String: Set<String>] {
        var known: [String: Set<String>] = [:]
        let when = day.map { "valid_from <= '\($0)'::date AND '\($0)'::date < valid_to" } ?? "valid_to = 'infinity'"
        for spec in dimensions where spec.isReferenced {
            let key = spec.key.map { "\($0)::text" }.joined(separator: " || chr(31) || ")
            var set = Set<String>()
            for r in try pg.query("SELECT \(key) FROM \(s.datalake).\(spec.table) WHERE \(when)").rows {
                set.insert(try r.decode(String.self, 0))
            }
            known[spec.table] = set
        }
        return known
    }

    /// The temporary table a dimension file is staged in before its merge.
    static func stage(_ spec: CSVTableSpec) -> String { "b2b_stage_\(spec.table)" }

    /// Validates a dimension file and merges it as of `day` (type 2).
    static func mergeDimension(
        _ spec: CSVTableSpec, path: String, day: Day, tx: PostgresConnection, s: PipelineSettings,
        known: inout [String: Set<String>], ids: [String: Int64], pending: inout [String: B2B.TableResult],
        result: inout Result
    ) throws {
        let t = "\(s.datalake).\(spec.table)"
        let cols = spec.columns.map(\.name)
        let stage = stage(spec)
        var v = CSVValidator(spec: spec, known: known)
        try tx.copyIn("COPY \(stage) (\(cols.joined(separator: ", "))) FROM STDIN") { w in
            try v.run(path: path) { values in try w.writeRow(values) }
        }
        known = v.known
        let keyMatch = spec.key.map { "t.\($0) = s.\($0)" }.joined(separator: " AND ")
        let rest = cols.filter { !spec.key.contains($0) }
        let differs =
            "(\(rest.map { "t.\($0)" }.joined(separator: ", "))) IS DISTINCT FROM "
            + "(\(rest.map { "s.\($0)" }.joined(separator: ", ")))"
        // In one round trip (a Day's text is digits and dashes). A version that began the same day
        // is corrected in place; an older one ends and a new one starts. The stage is emptied by
        // TRUNCATE: a DELETE would leave its dead rows for every later merge to scan (autovacuum
        // does not visit temporary tables).
        let d = "'\(day)'::date"
        let r = try tx.executeEach(
            script: """
                SELECT count(*) FROM \(stage) s JOIN \(t) t ON \(keyMatch) AND t.valid_to = 'infinity'
                WHERE NOT \(differs);
                UPDATE \(t) t SET \(rest.map { "\($0) = s.\($0)" }.joined(separator: ", ")) FROM \(stage) s
                WHERE \(keyMatch) AND t.valid_to = 'infinity' AND t.valid_from = \(d) AND \(differs);
                UPDATE \(t) t SET valid_to = \(d) FROM \(stage) s
                WHERE \(keyMatch) AND t.valid_to = 'infinity' AND t.valid_from < \(d) AND \(differs);
                INSERT INTO \(t) (\(cols.joined(separator: ", ")), valid_from)
                SELECT \(cols.map { "s.\($0)" }.joined(separator: ", ")), \(d) FROM \(stage) s
                WHERE NOT EXISTS (SELECT 1 FROM \(t) t WHERE \(keyMatch) AND t.valid_to = 'infinity');
                TRUNCATE \(stage)
                """)
        let (sameDay, ended, added) = (r[1].affectedRows, r[2].affectedRows, r[3].affectedRows)
        var c = B2B.TableResult(table: spec.table)
        c.read = v.read
        c.loaded = v.accepted
        c.rejected = Int64(v.rejects.count)
        c.unchanged = try r[0].rows[0].decode(Int64.self, 0)
        c.updated = Int64(sameDay + ended)
        c.inserted = Int64(added - ended)
        c.bytes = fileSize(path)
        try record(
            c, id: ids[spec.table]!, rejects: v.rejects, source: path, tx: tx, s: s, pending: &pending, result: &result)
    }

    /// Ends the catalog rows a day's export removes.
    static func removeCatalogRows(
        path: String, day: Day, tx: PostgresConnection, s: PipelineSettings, known: inout [String: Set<String>],
        ids: [String: Int64], pending: inout [String: B2B.TableResult], result: inout Result
    ) throws {
        let t = "\(s.datalake).inventory"
        let stage = stage(B2B.inventoryRemoved)
        var v = CSVValidator(spec: B2B.inventoryRemoved, known: known)
        var gone: [String] = []
        try tx.copyIn("COPY \(stage) (company_cuit, product_id) FROM STDIN") { w in
            try v.run(path: path) { values in
                gone.append(values.joined(separator: "\u{1F}"))
                try w.writeRow(values)
            }
        }
        for k in gone { known["inventory"]?.remove(k) }
        let match = "t.company_cuit = s.company_cuit AND t.product_id = s.product_id AND t.valid_to = 'infinity'"
        let d = "'\(day)'::date"
        let r = try tx.executeEach(
            script: """
                DELETE FROM \(t) t USING \(stage) s WHERE \(match) AND t.valid_from = \(d);
                UPDATE \(t) t SET valid_to = \(d) FROM \(stage) s WHERE \(match) AND t.valid_from < \(d);
                TRUNCATE \(stage)
                """)
        var c = B2B.TableResult(table: "inventory")
        c.read = v.read
        c.loaded = v.accepted
        c.rejected = Int64(v.rejects.count)
        c.removed = Int64(r[0].affectedRows + r[1].affectedRows)
        c.unchanged = v.accepted - c.removed
        c.bytes = fileSize(path)
        try record(
            c, id: ids["inventory"]!, rejects: v.rejects, source: path, tx: tx, s: s, pending: &pending, result: &result
        )
    }

    /// Appends a day's orders and sales (after deleting the day's old ones, for a re-exported day);
    /// returns how many of each the day now has.
    @discardableResult
    static func loadFacts(
        _ files: DayFiles, replace: Bool, tx: PostgresConnection, s: PipelineSettings,
        known: inout [String: Set<String>], ids: [String: Int64], pending: inout [String: B2B.TableResult],
        result: inout Result
    ) throws -> (orders: Int64, sales: Int64) {
        var loaded: [String: Int64] = [:]
        let d = files.day.description
        var removed: [String: Int64] = [:]
        if replace {
            removed["sales"] = Int64(
                try tx.query("DELETE FROM \(s.datalake).sales WHERE export_day = $1::date", [d]).affectedRows)
            removed["orders"] = Int64(
                try tx.query("DELETE FROM \(s.datalake).orders WHERE export_day = $1::date", [d]).affectedRows)
        }
        known["orders"] = []
        for (spec, path) in [(ordersSpec(day: files.day), files.orders), (facts[1], files.sales)] {
            var r = B2B.TableResult(table: spec.table)
            r.removed = removed[spec.table] ?? 0
            if let path {
                var v = CSVValidator(spec: spec, known: known)
                let cols = spec.columns.map(\.name) + ["export_day"]
                // Small chunks: a day's file is about one default chunk, and sent whole at its end
                // Postgres would start on it only once every line is checked; sent as they come,
                // its insert work runs beside the checks of the lines after them.
                let copy = "COPY \(s.datalake).\(spec.table) (\(cols.joined(separator: ", "))) FROM STDIN"
                let suffix = Array("\t\(d)".utf8)
                try tx.copyIn(copy, chunkSize: 16 * 1024) { w in
                    try v.run(path: path, plain: { line in try w.writeRow(plainCSV: line, suffix: suffix) }) {
                        values in try w.writeRow(values + [d])
                    }
                }
                known = v.known
                r.read = v.read
                r.loaded = v.accepted
                r.rejected = Int64(v.rejects.count)
                r.inserted = v.accepted
                loaded[spec.table] = v.accepted
                r.bytes = fileSize(path)
                try record(
                    r, id: ids[spec.table]!, rejects: v.rejects, source: path, tx: tx, s: s, pending: &pending,
                    result: &result)
            } else if r.removed > 0 {
                try record(
                    r, id: ids[spec.table]!, rejects: [], source: "", tx: tx, s: s, pending: &pending, result: &result)
            }
        }
        return (loaded["orders"] ?? 0, loaded["sales"] ?? 0)
    }

    /// The orders spec for one day's export: an order must be placed on that day.
    static func ordersSpec(day: Day) -> CSVTableSpec {
        let o = facts[0]
        let prefix = day.description
        let bytes = Array(prefix.utf8)
        var spec = CSVTableSpec(
            table: o.table, file: o.file, columns: o.columns, key: o.key, references: o.references,
            rowCheck: { v in
                v[3].hasPrefix(prefix) ? nil : "ordered_at \(v[3]) is not on the export's day \(prefix)"
            }, plainRowCheck: { row in row.hasPrefix(3, bytes) })
        spec.isReferenced = true
        return spec
    }

    /// Stores a file's rejects (in the day's transaction) and adds its counts to the result and to
    /// the day's pending counts, which `addCounts` writes to the load records.
    static func record(
        _ r: B2B.TableResult, id: Int64, rejects: [Rejection], source: String, tx: PostgresConnection,
        s: PipelineSettings, pending: inout [String: B2B.TableResult], result: inout Result
    ) throws {
        try Rejection.store(rejects, load: id, source: source, schema: s.loads, on: tx)
        pending[r.table, default: B2B.TableResult(table: r.table)].add(r)
        if let i = result.tables.firstIndex(where: { $0.table == r.table }) { result.tables[i].add(r) }
    }

    /// Adds a day's counts to its tables' load records, in one statement of the day's transaction.
    static func addCounts(
        _ pending: [String: B2B.TableResult], ids: [String: Int64], tx: PostgresConnection, s: PipelineSettings
    ) throws {
        let rows = pending.values.sorted { $0.table < $1.table }
        guard !rows.isEmpty else { return }
        func column(_ f: (B2B.TableResult) -> Int64) -> PostgresArray { PostgresArray(rows.map(f)) }
        try tx.query(
            """
            UPDATE \(s.loads).load l SET rows_read = l.rows_read + c.read, rows_loaded = l.rows_loaded + c.loaded,
                   rows_rejected = l.rows_rejected + c.rejected, rows_inserted = l.rows_inserted + c.inserted,
                   rows_updated = l.rows_updated + c.updated, rows_unchanged = l.rows_unchanged + c.unchanged,
                   rows_removed = l.rows_removed + c.removed, bytes = l.bytes + c.bytes
            FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                        $7::bigint[], $8::bigint[], $9::bigint[])
                 AS c(id, read, loaded, rejected, inserted, updated, unchanged, removed, bytes)
            WHERE l.id = c.id
            """,
            [
                PostgresArray(rows.map { ids[$0.table]! }), column(\.read), column(\.loaded), column(\.rejected),
                column(\.inserted), column(\.updated), column(\.unchanged), column(\.removed), column(\.bytes),
            ])
    }

    static func fileSize(_ path: String) -> Int64 {
        Int64((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
    }

    /// The latest day D such that every day from the history's start to D is loaded (nil: none is).
    public static func watermark(pg: PostgresConnection, settings s: PipelineSettings) throws -> Day? {
        let r = try pg.query(
            """
            SELECT min(b.day)::text FROM \(s.loads).b2b_day b
            WHERE b.day >= $1::date AND EXISTS (SELECT 1 FROM \(s.loads).b2b_day WHERE day = $1::date)
              AND NOT EXISTS (SELECT 1 FROM \(s.loads).b2b_day c WHERE c.day = b.day + 1)
            """, [s.historyStart.description])
        return try r.rows.first?.decode(String?.self, 0).flatMap { Day(strict: $0) }
    }
}
