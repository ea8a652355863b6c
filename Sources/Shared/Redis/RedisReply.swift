/// A Redis reply, copied out of hiredis (binary-safe: bulk strings are bytes).
import ETLSupport

public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8])
    case array([RedisReply])
    case null

    /// A bulk or status reply as text (invalid UTF-8 is repaired), nil otherwise.
    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    /// An integer reply, or a bulk reply holding a decimal number.
    public var int: Int? {
        switch self {
        case .integer(let i): return i
        case .bulk(let b): return Int(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// The message of an error reply.
    public var errorMessage: String? {
        if case .error(let e) = self { return e }
        return nil
    }
}
