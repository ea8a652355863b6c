/// A plain CSV line: printable ASCII only, no quote, no backslash, and no field that begins or ends
/// with a blank, split at its commas. Such a line needs no unquoting, no trimming and no escaping for
/// COPY's text format, so it can be checked and sent on its bytes: `CSVValidator` takes this path for
/// the bulk of a big file (a `String` per line and per value was most of the b2b load's CPU) and
/// hands every line it does not accept here to its full check, which alone decides a rejection and
/// its reason. So a line accepted here must be one the full check accepts with the very same values.
public struct CSVPlainRow {
    public let line: UnsafeBufferPointer<UInt8>
    let starts: UnsafeBufferPointer<Int>
    let ends: UnsafeBufferPointer<Int>

    public var count: Int { starts.count }

    public func field(_ i: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: line[starts[i]..<ends[i]])
    }

    /// Field `i` as a number with `scale` decimals, in units of its last one ("12.5", scale 2: 1250);
    /// nil unless it is digits with at most `scale` decimals (and at most 18 digits in all).
    public func scaled(_ i: Int, scale: Int) -> Int64? {
        let f = field(i)
        var n: Int64 = 0
        var digits = 0
        var decimals = -1
        for c in f {
            if c == 46 {  // "."
                guard decimals < 0 else { return nil }
                decimals = 0
                continue
            }
            guard c >= 48 && c <= 57, digits < 18 else { return nil }
            n = n * 10 + Int64(c - 48)
            digits += 1
            if decimals >= 0 { decimals += 1 }
        }
        guard digits > 0, decimals != 0, decimals <= scale else { return nil }
        for _ in max(decimals, 0)..<scale { n *= 10 }
        return n
    }

    public func hasPrefix(_ i: Int, _ prefix: [UInt8]) -> Bool {
        let f = field(i)
        return f.count >= prefix.count && zip(f, prefix).allSatisfy { $0 == $1 }
    }
}

extension CSVPlainRow {
    /// Splits a line (without its line break) at its commas into `starts` and `ends`; false when it
    /// is not plain (see the type).
    static func split(_ line: UnsafeBufferPointer<UInt8>, starts: inout [Int], ends: inout [Int]) -> Bool {
        starts.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        guard !line.isEmpty else { return false }
        var start = 0
        for (i, c) in line.enumerated() {
            guard c >= 32 && c <= 126 && c != 34 && c != 92 else { return false }  // quote, backslash
            if c == 44 {
                starts.append(start)
                ends.append(i)
                start = i + 1
            }
        }
        starts.append(start)
        ends.append(line.count)
        for (s, e) in zip(starts, ends) where e > s && (line[s] == 32 || line[e - 1] == 32) { return false }
        return true
    }
}

extension CSVColumn {
    /// Whether a field of a plain line is valid exactly as it is: the value `check` would return
    /// is these bytes. false means "let `check` decide", never "reject".
    func acceptsAsIs(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        switch kind {
        case .text(let valid, _):
            return !v.isEmpty && (valid?(v) ?? true)
        case .integer(let min, let max):
            guard let n = Self.canonicalInteger(v) else { return false }
            return n >= min && n <= max
        case .decimal(let scale, let digits):
            var whole = 0
            var significant = 0
            var i = 0
            while i < v.count, v[i] >= 48 && v[i] <= 57 {
                if significant > 0 || v[i] != 48 { significant += 1 }
                whole += 1
                i += 1
            }
            guard whole > 0, significant <= digits - scale else { return false }
            if i == v.count { return true }
            guard v[i] == 46 else { return false }
            let decimals = v.count - i - 1
            guard decimals > 0, decimals <= scale else { return false }
            return v[(i + 1)...].allSatisfy { $0 >= 48 && $0 <= 57 }
        case .date:
            return CivilDateCheck.date(bytes: v)
        case .timestamp:
            // YYYY-MM-DD HH:MM:SS[.ffffff]; the "T" form is rewritten by `check`.
            return v.count >= 19 && v[10] == 32 && CivilDateCheck.date(bytes: UnsafeBufferPointer(rebasing: v[0..<10]))
                && CivilDateCheck.time(bytes: UnsafeBufferPointer(rebasing: v[11...]))
        case .boolean:
            // The forms `check` returns unchanged.
            return v.elementsEqual("true".utf8) || v.elementsEqual("false".utf8)
        }
    }

    /// "0", or digits without a leading zero after an optional "-" (at most 18: no overflow), as
    /// `String(Int64(v)!)` would write them.
    static func canonicalInteger(_ v: UnsafeBufferPointer<UInt8>) -> Int64? {
        var i = 0
        let negative = v.first == 45
        if negative { i = 1 }
        let digits = v.count - i
        guard digits >= 1, digits <= 18, v[i] != 48 || (digits == 1 && !negative) else { return nil }
        var n: Int64 = 0
        while i < v.count {
            let c = v[i]
            guard c >= 48 && c <= 57 else { return nil }
            n = n * 10 + Int64(c - 48)
            i += 1
        }
        return negative ? -n : n
    }

}
