import ETLSupport
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
        default:
            guard let v = Double(postgresText) else { return nil }
            self = v
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
