import Foundation

/// JSON for the queue's hot path: task messages and completion events are flat objects (strings
/// and numbers, plus one object of strings), written and read tens of thousands of times a second.
/// Foundation's Codable coders cost tens of microseconds each there; this writes and reads those
/// shapes directly. `FlatJSON.parse` returns nil for anything outside that shape (or not JSON),
/// and callers then fall back to `JSONDecoder`, which also explains what is wrong.
public enum FlatJSON {
    public enum Value: Equatable, Sendable {
        case string(String)
        /// A number, as its JSON text.
        case number(String)
        case object([String: String])
        case strings([String])
        case bool(Bool)
        case null

        public var string: String? {
            if case .string(let s) = self { return s }
            return nil
        }
        public var int: Int? {
            if case .number(let n) = self {
                return Int(n) ?? Double(n).flatMap { $0 == $0.rounded() ? Int(exactly: $0) : nil }
            }
            return nil
        }
        public var double: Double? {
            if case .number(let n) = self { return Double(n) }
            return nil
        }
    }

    /// Writes one object; keys are written in the order given.
    public struct Writer {
        public private(set) var bytes: [UInt8] = [UInt8(ascii: "{")]
        private var first = true

        public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

        private mutating func key(_ k: String) {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            Self.appendString(k, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
        }

        public mutating func field(_ k: String, _ v: String) {
            key(k)
            Self.appendString(v, to: &bytes)
        }
        public mutating func field(_ k: String, _ v: Int) {
            key(k)
            bytes += Array(String(v).utf8)
        }
        public mutating func field(_ k: String, _ v: Int64) {
            key(k)
            bytes += Array(String(v).utf8)
        }
        public mutating func field(_ k: String, _ v: Double) {
            key(k)
            bytes += Array((v.isFinite ? (v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)") : "0").utf8)
        }
        public mutating func field(_ k: String, _ v: [String: String]) {
            key(k)
            bytes.append(UInt8(ascii: "{"))
            for (i, (mk, mv)) in v.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                Self.appendString(mk, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                Self.appendString(mv, to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }

        public mutating func field(_ k: String, _ v: [String]) {
            key(k)
            bytes.append(UInt8(ascii: "["))
            for (i, item) in v.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                Self.appendString(item, to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        }

        public func finished() -> [UInt8] { bytes + [UInt8(ascii: "}")] }

        static func appendString(_ s: String, to out: inout [UInt8]) {
            out.append(UInt8(ascii: "\""))
            for b in s.utf8 {
                switch b {
                case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
                case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
                case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
                case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
                case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    out += [
                        UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)],
                        hex[Int(b & 15)],
                    ]
                default: out.append(b)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
    }

    /// Parses one object whose values are strings, numbers, booleans, null, objects of strings
    /// or arrays of strings. Nil when the text is not such an object (the caller falls back to Foundation).
    public static func parse(_ bytes: [UInt8]) -> [String: Value]? {
        bytes.withUnsafeBufferPointer { buf in
            var p = Parser(buf: buf)
            guard let obj = p.object(nested: false) else { return nil }
            p.skipSpace()
            return p.i == buf.count ? obj : nil
        }
    }

    private struct Parser {
        let buf: UnsafeBufferPointer<UInt8>
        var i = 0

        mutating func skipSpace() {
            while i < buf.count, buf[i] == 0x20 || buf[i] == 0x0A || buf[i] == 0x0D || buf[i] == 0x09 { i += 1 }
        }

        mutating func expect(_ c: UInt8) -> Bool {
            skipSpace()
            guard i < buf.count, buf[i] == c else { return false }
            i += 1
            return true
        }

        mutating func object(nested: Bool) -> [String: Value]? {
            guard expect(UInt8(ascii: "{")) else { return nil }
            var out: [String: Value] = [:]
            if expect(UInt8(ascii: "}")) { return out }
            while true {
                skipSpace()
                guard let k = string(), expect(UInt8(ascii: ":")) else { return nil }
                skipSpace()
                guard i < buf.count else { return nil }
                switch buf[i] {
                case UInt8(ascii: "\""):
                    guard let s = string() else { return nil }
                    out[k] = .string(s)
                case UInt8(ascii: "{") where !nested:
                    guard let inner = object(nested: true) else { return nil }
                    var map: [String: String] = [:]
                    for (ik, iv) in inner {
                        guard case .string(let s) = iv else { return nil }
                        map[ik] = s
                    }
                    out[k] = .object(map)
                case UInt8(ascii: "[") where !nested:
                    i += 1
                    var list: [String] = []
                    if !expect(UInt8(ascii: "]")) {
                        while true {
                            skipSpace()
                            guard let item = string() else { return nil }
                            list.append(item)
                            if expect(UInt8(ascii: ",")) { continue }
                            guard expect(UInt8(ascii: "]")) else { return nil }
                            break
                        }
                    }
                    out[k] = .strings(list)
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    let start = i
                    while i < buf.count, Self.isNumberByte(buf[i]) { i += 1 }
                    let text = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<i]), as: UTF8.self)
                    guard Double(text) != nil else { return nil }
                    out[k] = .number(text)
                case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                    guard let v = literal() else { return nil }
                    out[k] = v
                default:
                    return nil
                }
                if expect(UInt8(ascii: ",")) { continue }
                return expect(UInt8(ascii: "}")) ? out : nil
            }
        }

        static func isNumberByte(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "+")
                || b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E")
        }

        mutating func literal() -> Value? {
            for (word, value) in [("true", Value.bool(true)), ("false", .bool(false)), ("null", .null)] {
                let w = Array(word.utf8)
                if i + w.count <= buf.count, Array(buf[i..<(i + w.count)]) == w {
                    i += w.count
                    return value
                }
            }
            return nil
        }

        /// A string at `i` (which is at its opening quote), unescaped; nil when malformed.
        mutating func string() -> String? {
            guard i < buf.count, buf[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            // Fast path: no escapes.
            while i < buf.count, buf[i] != UInt8(ascii: "\""), buf[i] != UInt8(ascii: "\\"), buf[i] >= 0x20 { i += 1 }
            guard i < buf.count else { return nil }
            if buf[i] == UInt8(ascii: "\"") {
                let s = String(validating: UnsafeBufferPointer(rebasing: buf[start..<i]), as: UTF8.self)
                i += 1
                return s
            }
            var bytes = Array(buf[start..<i])
            while i < buf.count {
                let b = buf[i]
                if b == UInt8(ascii: "\"") {
                    i += 1
                    return String(validating: bytes, as: UTF8.self)
                }
                if b < 0x20 { return nil }
                if b != UInt8(ascii: "\\") {
                    bytes.append(b)
                    i += 1
                    continue
                }
                i += 1
                guard i < buf.count else { return nil }
                switch buf[i] {
                case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "/"): bytes.append(UInt8(ascii: "/"))
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "u"):
                    guard var code = hex4(at: i + 1) else { return nil }
                    i += 4
                    if (0xD800..<0xDC00).contains(code) {
                        // A surrogate pair: the low half must follow as \uXXXX.
                        guard i + 2 < buf.count, buf[i + 1] == UInt8(ascii: "\\"), buf[i + 2] == UInt8(ascii: "u"),
                            let low = hex4(at: i + 3), (0xDC00..<0xE000).contains(low)
                        else { return nil }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                    guard let scalar = Unicode.Scalar(code) else { return nil }
                    bytes += Array(String(Character(scalar)).utf8)
                default: return nil
                }
                i += 1
            }
            return nil
        }

        func hex4(at j: Int) -> UInt32? {
            guard j + 4 <= buf.count else { return nil }
            var v: UInt32 = 0
            for k in j..<(j + 4) {
                let c = buf[k]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
    }
}
