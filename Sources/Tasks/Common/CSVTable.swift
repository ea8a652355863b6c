import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// A column of a CSV source: its name (the CSV header and the table column) and what a valid value is.
public struct CSVColumn: Sendable {
    public enum Kind: Sendable {
        /// Non-empty text; `valid` (when given) says whether its UTF-8 bytes have the right shape,
        /// described by `what`.
        case text(valid: (@Sendable (UnsafeBufferPointer<UInt8>) -> Bool)?, what: String)
        /// A whole number in `min...max` (`max` defaults to Postgres `integer`'s).
        case integer(min: Int64, max: Int64 = Int64(Int32.max))
        case decimal(scale: Int, digits: Int)
        case date
        case timestamp
        case boolean
    }
    public let name: String
    public let kind: Kind

    public init(_ name: String, _ kind: Kind) {
        self.name = name
        self.kind = kind
    }

    /// The value as the table stores it, or why it is not valid.
    func check(_ raw: String) -> Result<String, CSVRowError> {
        let v = Self.trimmed(raw)
        switch kind {
        case .text(let valid, let what):
            if v.isEmpty { return .failure(.init("\(name) is empty")) }
            var bytes = v
            if let valid, !bytes.withUTF8(valid) { return .failure(.init("\(name) \"\(v)\" is not \(what)")) }
            return .success(v)
        case .integer(let min, let max):
            guard let n = Int64(v) else { return .failure(.init("\(name) \"\(v)\" is not a whole number")) }
            guard n >= min else { return .failure(.init("\(name) \(n) is below \(min)")) }
            guard n <= max else { return .failure(.init("\(name) \(n) is above \(max)")) }
            return .success(String(n))
        case .decimal(let scale, let digits):
            let parts = v.split(separator: ".", omittingEmptySubsequences: false)
            let ok =
                !v.isEmpty && parts.count <= 2 && !parts[0].isEmpty && parts[0].allSatisfy(\.isASCIIDigit)
                && (parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy(\.isASCIIDigit)))
            guard ok else { return .failure(.init("\(name) \"\(v)\" is not a non-negative decimal number like 12.50")) }
            if parts.count == 2 && parts[1].count > scale {
                return .failure(.init("\(name) \"\(v)\" has more than \(scale) decimals"))
            }
            if parts[0].drop(while: { $0 == "0" }).count > digits - scale {
                return .failure(.init("\(name) \"\(v)\" is too large"))
            }
            return .success(v)
        case .date:
            guard CivilDateCheck.date(v) else { return .failure(.init("\(name) \"\(v)\" is not a date (YYYY-MM-DD)")) }
            return .success(v)
        case .timestamp:
            let s = v.utf8.contains(84) ? v.replacingOccurrences(of: "T", with: " ") : v  // 84: "T"
            let pieces = s.split(separator: " ", omittingEmptySubsequences: false)
            guard pieces.count == 2, CivilDateCheck.date(String(pieces[0])), CivilDateCheck.time(String(pieces[1]))
            else {
                return .failure(.init("\(name) \"\(v)\" is not a timestamp (YYYY-MM-DD HH:MM:SS)"))
            }
            return .success(s)
        case .boolean:
            switch v.lowercased() {
            case "true", "t", "yes", "1": return .success("true")
            case "false", "f", "no", "0": return .success("false")
            default: return .failure(.init("\(name) \"\(v)\" is not true or false"))
            }
        }
    }
}

extension CSVColumn {
    /// `raw` without leading and trailing blanks, exactly as `trimmingCharacters(in: .whitespaces)`
    /// (tab, U+200B and the Unicode space separators, Zs; checked against it for every scalar), but
    /// without its round trip through NSString and UTF-16 on every value: that was 40% of the b2b
    /// load's CPU (`perf`, bench/history). A value with nothing to trim comes back as it is.
    static func trimmed(_ raw: String) -> String {
        func blank(_ u: Unicode.Scalar) -> Bool {
            if u.isASCII { return u == " " || u == "\t" }  // the only ASCII Zs is the space
            return u == "\u{200B}" || u.properties.generalCategory == .spaceSeparator
        }
        let scalars = raw.unicodeScalars
        guard let first = scalars.first, let last = scalars.last, blank(first) || blank(last) else { return raw }
        var start = scalars.startIndex
        var end = scalars.endIndex
        while start < end, blank(scalars[start]) { start = scalars.index(after: start) }
        while end > start, blank(scalars[scalars.index(before: end)]) { end = scalars.index(before: end) }
        return String(scalars[start..<end])
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// A day and a time of day as the CSV sources write them, checked on their bytes (the plain path's
/// checks are these same functions).
enum CivilDateCheck {
    static func date(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { date(bytes: $0) }
    }

    static func time(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { time(bytes: $0) }
    }

    /// The digits at `r` as a number; nil if any is not a digit.
    private static func number(_ v: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Int? {
        var n = 0
        for i in r {
            guard v[i] >= 48 && v[i] <= 57 else { return nil }
            n = n * 10 + Int(v[i] - 48)
        }
        return n
    }

    /// YYYY-MM-DD, digits only, a real day (2024-02-30 is not).
    static func date(bytes v: UnsafeBufferPointer<UInt8>) -> Bool {
        guard v.count == 10, v[4] == 45, v[7] == 45, let y = number(v, 0..<4), let m = number(v, 5..<7),
            let d = number(v, 8..<10), y >= 1, (1...12).contains(m), (1...31).contains(d)
        else { return false }
        // A real day survives the round trip through day numbers; 2024-02-30 comes back as March 1.
        return CivilDate.fromDays(CivilDate.toDays(year: y, month: m, day: d)) == (y, m, d)
    }

    /// HH:MM:SS, and at most 6 decimals of a second (what Postgres keeps: more would be rounded,
    /// 23:59:59.9999999 to the next day).
    static func time(bytes v: UnsafeBufferPointer<UInt8>) -> Bool {
        guard v.count == 8 || (v.count >= 10 && v.count <= 15 && v[8] == 46), v[2] == 58, v[5] == 58,
            let h = number(v, 0..<2), let m = number(v, 3..<5), let s = number(v, 6..<8), h <= 23, m <= 59, s <= 59
        else { return false }
        return v.count == 8 || number(v, 9..<v.count) != nil
    }
}

/// Why a CSV row was rejected.
public struct CSVRowError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A CSV source: its file, its table, its columns, its key and the keys it refers to.
public struct CSVTableSpec: Sendable {
    public struct Reference: Sendable {
        public let columns: [String]
        public let table: String
    }
    public let table: String
    public let file: String
    public let columns: [CSVColumn]
    public let key: [String]
    public let references: [Reference]
    /// A check across columns (e.g. total = quantity × unit price), given the checked values in
    /// column order.
    public let rowCheck: (@Sendable ([String]) -> String?)?
    /// The same check on a plain line's bytes (`CSVPlainRow`, every field already checked): true
    /// when `rowCheck` would pass it. A spec with a `rowCheck` and none of this never takes the
    /// plain path.
    public let plainRowCheck: (@Sendable (CSVPlainRow) -> Bool)?
    /// Whether another table refers to this one (then its accepted keys are kept for the checks).
    public var isReferenced = true

    public init(
        table: String, file: String, columns: [CSVColumn], key: [String], references: [Reference] = [],
        rowCheck: (@Sendable ([String]) -> String?)? = nil, plainRowCheck: (@Sendable (CSVPlainRow) -> Bool)? = nil
    ) {
        self.table = table
        self.file = file
        self.columns = columns
        self.key = key
        self.references = references
        self.rowCheck = rowCheck
        self.plainRowCheck = plainRowCheck
    }
}

/// Checks a CSV file row by row against a spec: column count, types, duplicate keys, references
/// to keys accepted earlier (in `known`). Good rows are handed on as the table stores them; bad
/// rows come back with their line number and reason. Streams: memory holds the keys, not the rows.
public struct CSVValidator {
    public let spec: CSVTableSpec
    /// Accepted keys per table, shared across the tables of one load (a reference must point at an
    /// accepted row).
    public var known: [String: Set<String>]
    public private(set) var read: Int64 = 0
    public private(set) var accepted: Int64 = 0
    public private(set) var rejects: [Rejection] = []
    private var seen: [String: Int64] = [:]
    private var keyIndex: [Int] = []
    private var refIndex: [(cols: [Int], table: String)] = []
    /// While `run` goes: the keys of the tables referred to (in `refIndex`'s order) and this
    /// table's accepted keys, taken out of `known` so that adding one copies nothing.
    private var refKeys: [Set<String>] = []
    private var ownKeys: Set<String> = []
    /// The plain path's scratch: field bounds and a key's bytes.
    private var starts: [Int] = []
    private var ends: [Int] = []
    private var keyBytes: [UInt8] = []

    public init(spec: CSVTableSpec, known: [String: Set<String>]) {
        precondition(!spec.references.contains { $0.table == spec.table }, "\(spec.table) refers to itself")
        self.spec = spec
        self.known = known
        let names = spec.columns.map(\.name)
        keyIndex = spec.key.map { names.firstIndex(of: $0)! }
        refIndex = spec.references.map { r in (r.columns.map { names.firstIndex(of: $0)! }, r.table) }
    }

    /// Reads `path`, calling `accept` with each good row's values in column order.
    public mutating func run(path: String, accept: ([String]) throws -> Void) throws {
        try run(path: path, plain: nil, accept: accept)
    }

    /// Reads `path`; each good row goes to `plain` as its line's bytes (without the line break)
    /// when the line is plain (`CSVPlainRow`: its values are its fields as they are), else to
    /// `accept` as values in column order.
    public mutating func run(
        path: String, plain: ((UnsafeBufferPointer<UInt8>) throws -> Void)?, accept: ([String]) throws -> Void
    ) throws {
        let reader = try LineReader(path: path)
        var lineNumber: Int64 = 0
        var header: [String]?
        refKeys = refIndex.map { known[$0.table] ?? [] }
        if spec.isReferenced { ownKeys = known.removeValue(forKey: spec.table) ?? [] }
        defer {
            if spec.isReferenced { known[spec.table] = ownKeys }
            ownKeys = []
            refKeys = []
        }
        let plainChecked = spec.rowCheck == nil || spec.plainRowCheck != nil
        // A record is one line: no column of these tables holds a line break, so a quote left open
        // is an error of that line rather than the start of a record that swallows the next ones.
        try reader.forEachLine { bytes, _, cut in
            lineNumber += 1
            let line = LineReader.withoutLineBreak(bytes)
            if let plain, plainChecked, header != nil, !cut, bytes.last == 10, acceptPlain(line, line: lineNumber) {
                read += 1
                accepted += 1
                try plain(line)
                return true
            }
            var text = String(decoding: line, as: UTF8.self)
            if lineNumber == 1 && text.hasPrefix("\u{FEFF}") { text.removeFirst() }  // a UTF-8 byte order mark
            if header == nil && (cut || CSVLine.split(Substring(text)) == nil) {
                throw PipelineError(
                    "\(path) line 1: the header is not a CSV line;"
                        + " expected \(spec.columns.map(\.name).joined(separator: ",")). Fix the file's first line"
                )
            }
            if header != nil && text.isEmpty { return true }  // blank lines are not rows
            if header != nil { read += 1 }
            if cut {
                rejects.append(Rejection(line: lineNumber, raw: text, reason: "row longer than 1 MiB"))
                return true
            }
            guard let fields = CSVLine.split(Substring(text)) else {
                rejects.append(
                    Rejection(line: lineNumber, raw: text, reason: "a quoted field is not closed on its line"))
                return true
            }
            guard header != nil else {
                let expected = spec.columns.map(\.name)
                let got = fields.map { $0.trimmingCharacters(in: .whitespaces) }
                guard got == expected else {
                    throw PipelineError(
                        "\(path) line 1: the header is \(got.joined(separator: ","));"
                            + " expected \(expected.joined(separator: ",")). Fix the file's first line"
                    )
                }
                header = got
                return true
            }
            switch check(fields, line: lineNumber) {
            case .success(let values):
                accepted += 1
                try accept(values)
            case .failure(let e):
                rejects.append(Rejection(line: lineNumber, raw: text, reason: e.description))
            }
            return true
        }
        if header == nil {
            throw PipelineError(
                "\(path) is empty: it needs at least the header line \(spec.columns.map(\.name).joined(separator: ","))"
            )
        }
    }

    /// A key of the fields at `cols`, as `check` joins them.
    private mutating func key(_ row: CSVPlainRow, _ cols: [Int]) -> String {
        if cols.count == 1 { return String(decoding: row.field(cols[0]), as: UTF8.self) }
        keyBytes.removeAll(keepingCapacity: true)
        for (n, c) in cols.enumerated() {
            if n > 0 { keyBytes.append(0x1F) }
            keyBytes.append(contentsOf: row.field(c))
        }
        return String(decoding: keyBytes, as: UTF8.self)
    }

    /// The plain path: true when the line is plain and passes every check `check` makes (then its
    /// key is recorded as `check` would); false leaves the line to the full path, which decides.
    private mutating func acceptPlain(_ line: UnsafeBufferPointer<UInt8>, line number: Int64) -> Bool {
        guard CSVPlainRow.split(line, starts: &starts, ends: &ends), starts.count == spec.columns.count else {
            return false
        }
        let (starts, ends) = (self.starts, self.ends)
        return starts.withUnsafeBufferPointer { s in
            ends.withUnsafeBufferPointer { e in
                let row = CSVPlainRow(line: line, starts: s, ends: e)
                for (i, c) in spec.columns.enumerated() where !c.acceptsAsIs(row.field(i)) { return false }
                if let check = spec.plainRowCheck, !check(row) { return false }
                for (n, r) in refIndex.enumerated() where !refKeys[n].contains(key(row, r.cols)) { return false }
                let k = key(row, keyIndex)
                guard seen[k] == nil else { return false }
                seen[k] = number
                if spec.isReferenced { ownKeys.insert(k) }
                return true
            }
        }
    }

    mutating func check(_ fields: [String], line: Int64) -> Result<[String], CSVRowError> {
        guard fields.count == spec.columns.count else {
            return .failure(
                .init(
                    "wrong column count: \(fields.count) instead of \(spec.columns.count)"
                        + " (\(spec.columns.map(\.name).joined(separator: ",")))"
                ))
        }
        var values: [String] = []
        values.reserveCapacity(fields.count)
        for (c, f) in zip(spec.columns, fields) {
            switch c.check(f) {
            case .success(let v): values.append(v)
            case .failure(let e): return .failure(e)
            }
        }
        if let rowCheck = spec.rowCheck, let problem = rowCheck(values) { return .failure(.init(problem)) }
        for (n, (cols, table)) in refIndex.enumerated() {
            let k = cols.map { values[$0] }.joined(separator: "\u{1F}")
            if !refKeys[n].contains(k) {
                let names = cols.map { spec.columns[$0].name }.joined(separator: ",")
                return .failure(
                    .init(
                        "unknown \(table): \(names) \(cols.map { values[$0] }.joined(separator: ","))"
                            + " is not a loaded \(table)"
                    ))
            }
        }
        let key = keyIndex.map { values[$0] }.joined(separator: "\u{1F}")
        if let first = seen[key] {
            return .failure(
                .init(
                    "duplicate key \(spec.key.joined(separator: ","))"
                        + "=\(keyIndex.map { values[$0] }.joined(separator: ",")), first on line \(first)"
                ))
        }
        seen[key] = line
        if spec.isReferenced { ownKeys.insert(key) }
        return .success(values)
    }
}
