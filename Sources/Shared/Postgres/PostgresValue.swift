import Foundation

/// A query parameter as it goes to the server: NULL, text (the server infers the type), or raw
/// bytes sent in binary format as `bytea`.
public enum PostgresParameter: Sendable, Equatable {
    case null
    case text(String)
    case bytes([UInt8])
}

/// A Swift value that can be a query parameter.
public protocol PostgresEncodable {
    var postgresParameter: PostgresParameter { get }
}

/// A Swift value that can be read from a result column (text format).
///
/// Non-optional types fail on NULL; `Optional<T>` turns NULL into nil.
public protocol PostgresDecodable {
    static func decode(postgresText text: String?) throws(PostgresDecodingFailure) -> Self
}

/// Why a column value did not decode (wrapped into `PostgresError.decoding` with the column name).
public enum PostgresDecodingFailure: Error, Sendable {
    case unexpectedNull
    case invalid(String)
}

/// Types whose non-NULL text form decodes with a failable initialiser.
public protocol PostgresTextDecodable: PostgresDecodable {
    init?(postgresText: String)
}

extension PostgresTextDecodable {
    public static func decode(postgresText text: String?) throws(PostgresDecodingFailure) -> Self {
        guard let text else { throw .unexpectedNull }
        guard let v = Self(postgresText: text) else { throw .invalid(text) }
        return v
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(postgresText text: String?) throws(PostgresDecodingFailure) -> Wrapped? {
        guard let text else { return nil }
        return try Wrapped.decode(postgresText: text)
    }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresParameter: PostgresParameter { self?.postgresParameter ?? .null }
}

extension String: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(self) }
    public init?(postgresText: String) { self = postgresText }
}

extension Substring: PostgresEncodable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
}

extension Int: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText, radix: 10) }
}

extension Int64: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText, radix: 10) }
}

extension Int32: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText, radix: 10) }
}

extension Int16: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(String(self)) }
    public init?(postgresText: String) { self.init(postgresText, radix: 10) }
}

extension Double: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter {
        if isNaN { return .text("NaN") }
        if isInfinite { return .text(self < 0 ? "-Infinity" : "Infinity") }
        return .text("\(self)")
    }
    public init?(postgresText: String) {
        switch postgresText {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default: guard let v = Double(postgresText) else { return nil }; self = v
        }
    }
}

extension Bool: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(self ? "t" : "f") }
    public init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension Decimal: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text("\(self)") }
    public init?(postgresText: String) {
        guard let v = Decimal(string: postgresText, locale: Locale(identifier: "en_US_POSIX")) else { return nil }
        self = v
    }
}

extension UUID: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(uuidString.lowercased()) }
    public init?(postgresText: String) { self.init(uuidString: postgresText) }
}

/// `bytea`: sent as binary, read from the server's hex text form (`\x0a0b`).
extension Array: PostgresEncodable where Element == UInt8 {
    public var postgresParameter: PostgresParameter { .bytes(self) }
}

extension Array: PostgresDecodable, PostgresTextDecodable where Element == UInt8 {
    public init?(postgresText: String) {
        guard let bytes = PostgresByteaText.decode(postgresText) else { return nil }
        self = bytes
    }
}

extension Data: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .bytes([UInt8](self)) }
    public init?(postgresText: String) {
        guard let bytes = PostgresByteaText.decode(postgresText) else { return nil }
        self = Data(bytes)
    }
}

enum PostgresByteaText {
    /// Decodes the hex form `\x...` that servers since 9.0 send by default.
    static func decode(_ text: String) -> [UInt8]? {
        let u = text.utf8
        guard u.count >= 2, u.first == UInt8(ascii: "\\"), u.dropFirst().first == UInt8(ascii: "x") else { return nil }
        return Hex.decode(u.dropFirst(2))
    }
}

/// `timestamptz`, `timestamp` and `date`, in the ISO text form the connection asks for (UTC).
extension Date: PostgresEncodable, PostgresTextDecodable {
    public var postgresParameter: PostgresParameter { .text(PostgresTimestamp.format(self)) }
    public init?(postgresText: String) {
        guard let d = PostgresTimestamp.parse(postgresText) else { return nil }
        self = d
    }
}

/// Reads and writes `YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM]]` without a DateFormatter (which is
/// slow and locale-bound).
public enum PostgresTimestamp {
    public static func format(_ date: Date) -> String {
        let totalMicros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = Int(floor(totalMicros / 1_000_000))
        let micros = Int(totalMicros - Double(seconds) * 1_000_000)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        seconds -= days * 86_400
        let (y, m, d) = CivilDate.fromDays(days)
        var s = "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2)) \(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2))"
        if micros != 0 { s += "." + pad(micros, 6) }
        return s + "+00"
    }

    public static func parse(_ text: String) -> Date? {
        let u = Array(text.utf8)
        var i = 0
        func number(_ n: Int) -> Int? {
            guard i + n <= u.count else { return nil }
            var v = 0
            for k in i..<(i + n) {
                let c = u[k]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < u.count, u[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = number(4), expect(45), let mo = number(2), expect(45), let d = number(2),
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var secs = Double(CivilDate.toDays(year: y, month: mo, day: d)) * 86_400
        if i < u.count && (u[i] == 32 || u[i] == 84) {  // ' ' or 'T'
            i += 1
            guard let h = number(2), expect(58), let mi = number(2), expect(58), let s = number(2),
                  h < 24, mi < 60, s < 61 else { return nil }
            secs += Double(h * 3600 + mi * 60 + s)
            if i < u.count && u[i] == 46 {  // '.'
                i += 1
                var frac = 0.0, scale = 0.1
                while i < u.count, u[i] >= 48, u[i] <= 57 {
                    frac += Double(u[i] - 48) * scale
                    scale /= 10
                    i += 1
                }
                secs += frac
            }
        }
        if i < u.count {  // zone: +HH, -HH, +HH:MM, Z
            if u[i] == 90 { i += 1 } else {
                let sign: Double = u[i] == 45 ? -1 : 1
                guard u[i] == 43 || u[i] == 45 else { return nil }
                i += 1
                guard let zh = number(2) else { return nil }
                var offset = zh * 3600
                if expect(58) { guard let zm = number(2) else { return nil }; offset += zm * 60 }
                if expect(58) { guard let zs = number(2) else { return nil }; offset += zs }
                secs -= sign * Double(offset)
            }
        }
        guard i == u.count else { return nil }
        return Date(timeIntervalSince1970: secs)
    }

    private static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}

/// Days since 1970-01-01 to and from a proleptic Gregorian date (Howard Hinnant's algorithm).
public enum CivilDate {
    public static func toDays(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public static func fromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
