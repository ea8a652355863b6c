import ETLSupport
import Foundation

/// One request of an Apache combined-format access log.
public struct WeblogRecord: Sendable, Equatable {
    public var clientIP: String
    public var ident: String?
    public var user: String?
    /// Seconds since 1970 (UTC), from `[10/Oct/2000:13:55:36 -0700]`.
    public var timestamp: Int64
    public var method: String?
    public var path: String?
    public var protocolVersion: String?
    /// The request line as logged, when it is not `METHOD PATH PROTOCOL` (e.g. `-` or garbage).
    public var rawRequest: String?
    public var status: Int
    public var bytes: Int64?
    public var referer: String?
    public var userAgent: String?
}

/// Why a line was rejected; `description` names the field and shows what was found.
public struct WeblogRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
    public init(reason: String) { self.reason = reason }
}

/// Parses `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` from raw bytes: quoted fields
/// may hold `\"` and `\\`, `-` stands for an empty field, IPv6 clients are accepted, and bytes
/// that are not UTF-8 are kept (replaced by U+FFFD) rather than failing the line.
public enum CombinedLogParser {
    /// Lines longer than this are rejected without being parsed.
    public static let maxLineBytes = 64 * 1024

    public static func parse(_ line: [UInt8]) throws(WeblogRejection) -> WeblogRecord {
        try line.withUnsafeBufferPointer { (b) throws(WeblogRejection) -> WeblogRecord in try parse(b) }
    }

    public static func parse(_ line: UnsafeBufferPointer<UInt8>) throws(WeblogRejection) -> WeblogRecord {
        var end = line.count
        while end > 0 && (line[end - 1] == 10 || line[end - 1] == 13) { end -= 1 }
        guard end <= maxLineBytes else {
            throw WeblogRejection(reason: "line too long: \(end) bytes, the limit is \(maxLineBytes)")
        }
        guard end > 0 else { throw WeblogRejection(reason: "empty line") }
        // An access log is text: a NUL byte means a binary or corrupted line (and Postgres text
        // could not store the field holding it).
        if let nul = UnsafeBufferPointer(rebasing: line[0..<end]).firstIndex(of: 0) {
            throw WeblogRejection(reason: "a NUL byte at byte \(nul + 1): not a text log line")
        }
        var i = 0

        func word(_ field: String) throws(WeblogRejection) -> String {
            let start = i
            while i < end && line[i] != 32 { i += 1 }
            guard i > start else { throw WeblogRejection(reason: "missing \(field)") }
            let s = text(start, i)
            skipSpace()
            return s
        }
        func skipSpace() { while i < end && line[i] == 32 { i += 1 } }
        func text(_ a: Int, _ b: Int) -> String {
            String(decoding: UnsafeBufferPointer(rebasing: line[a..<b]), as: UTF8.self)
        }
        func quoted(_ field: String) throws(WeblogRejection) -> String? {
            guard i < end, line[i] == 34 else {
                throw WeblogRejection(reason: "\(field) should be in double quotes, found \(preview(i))")
            }
            i += 1
            var bytes: [UInt8] = []
            while i < end {
                let c = line[i]
                if c == 92, i + 1 < end, line[i + 1] == 34 || line[i + 1] == 92 {
                    bytes.append(line[i + 1])
                    i += 2
                    continue
                }
                if c == 34 {
                    i += 1
                    skipSpace()
                    let s = String(decoding: bytes, as: UTF8.self)
                    return s == "-" ? nil : s
                }
                bytes.append(c)
                i += 1
            }
            throw WeblogRejection(reason: "\(field) opens a quote that never closes (truncated line?)")
        }
        func preview(_ at: Int) -> String {
            at >= end ? "end of line" : "\"" + text(at, min(end, at + 24)) + "\""
        }

        let ip = try word("client IP")
        guard isIP(ip) else { throw WeblogRejection(reason: "bad client IP \"\(ip.prefix(64))\"") }
        let ident = try word("ident")
        let user = try word("user")
        guard i < end, line[i] == 91, let close = (i..<end).first(where: { line[$0] == 93 }) else {
            throw WeblogRejection(reason: "missing [timestamp], found \(preview(i))")
        }
        let stampText = text(i + 1, close)
        guard let ts = parseTimestamp(UnsafeBufferPointer(rebasing: line[(i + 1)..<close])) else {
            throw WeblogRejection(
                reason: "bad timestamp \"\(stampText.prefix(40))\" (expected like 10/Oct/2000:13:55:36 -0700)")
        }
        i = close + 1
        skipSpace()
        let request = try quoted("request")
        let statusText = try word("status")
        guard statusText.utf8.count == 3, let status = Int(statusText), (100...599).contains(status) else {
            throw WeblogRejection(reason: "bad status \"\(statusText.prefix(16))\" (expected 100-599)")
        }
        let bytesText = try word("bytes")
        var size: Int64?
        if bytesText != "-" {
            guard let n = Int64(bytesText), n >= 0 else {
                throw WeblogRejection(reason: "bad byte count \"\(bytesText.prefix(24))\"")
            }
            size = n
        }
        let referer = try quoted("referer")
        let agent = try quoted("user agent")
        guard i >= end else { throw WeblogRejection(reason: "unexpected text after the user agent: \(preview(i))") }

        var record = WeblogRecord(
            clientIP: ip, ident: ident == "-" ? nil : ident, user: user == "-" ? nil : user,
            timestamp: ts, status: status, bytes: size, referer: referer, userAgent: agent)
        if let request {
            let parts = request.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count == 3 {
                record.method = String(parts[0])
                record.path = String(parts[1])
                record.protocolVersion = String(parts[2])
            } else {
                record.rawRequest = request
            }
        }
        return record
    }

    /// IPv4 dotted quad, or an IPv6 address (hex groups and colons, optionally ending in a dotted quad).
    static func isIP(_ s: String) -> Bool {
        let u = Array(s.utf8)
        if u.contains(58) {  // ':'
            guard u.count <= 45, u.filter({ $0 == 58 }).count >= 2 else { return false }
            return u.allSatisfy {
                ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) || $0 == 58 || $0 == 46
            }
        }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { p in
                p.count >= 1 && p.count <= 3 && p.allSatisfy(\.isASCII) && (Int(p).map { $0 <= 255 } ?? false)
            }
    }

    private static let months: [UInt32: Int] = {
        let names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        var m: [UInt32: Int] = [:]
        for (i, n) in names.enumerated() {
            let b = Array(n.utf8)
            m[UInt32(b[0]) << 16 | UInt32(b[1]) << 8 | UInt32(b[2])] = i + 1
        }
        return m
    }()

    /// `dd/Mon/yyyy:HH:MM:SS +hhmm` to seconds since 1970 (UTC).
    static func parseTimestamp(_ t: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard t.count == 26, t[2] == 47, t[6] == 47, t[11] == 58, t[14] == 58, t[17] == 58, t[20] == 32,
            t[21] == 43 || t[21] == 45
        else { return nil }
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for k in a..<(a + n) {
                let c = t[k]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard let day = num(0, 2), let year = num(7, 4), let h = num(12, 2), let mi = num(15, 2), let s = num(18, 2),
            let zh = num(22, 2), let zm = num(24, 2),
            let month = months[UInt32(t[3]) << 16 | UInt32(t[4]) << 8 | UInt32(t[5])],
            h < 24, mi < 60, s < 61, zm < 60, zh < 15, day >= 1
        else { return nil }
        let daysInMonth = [
            31, (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
            31,
        ]
        guard day <= daysInMonth[month - 1] else { return nil }
        let offset = (zh * 3600 + zm * 60) * (t[21] == 45 ? -1 : 1)
        return Int64(CivilDate.toDays(year: year, month: month, day: day) * 86_400 + h * 3600 + mi * 60 + s - offset)
    }
}
