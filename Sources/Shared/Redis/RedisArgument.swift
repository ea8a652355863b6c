import Foundation

/// A value that can be one argument of a Redis command. Arguments are length-prefixed, so any
/// bytes (NUL included) pass through unchanged.
public protocol RedisArgument {
    func write(to encoder: inout RedisCommandEncoder)
}

/// Builds commands in the Redis protocol (RESP arrays of bulk strings) into one reusable buffer.
public struct RedisCommandEncoder {
    public private(set) var bytes: [UInt8] = []
    /// Commands encoded since the last reset.
    public private(set) var commandCount = 0

    public init() { bytes.reserveCapacity(256) }

    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        commandCount = 0
    }

    /// Encodes one command from its arguments (the first is the command name).
    public mutating func encode(_ args: [any RedisArgument]) {
        header(UInt8(ascii: "*"), args.count)
        for a in args { a.write(to: &self) }
        commandCount += 1
    }

    public mutating func appendBulk(_ raw: UnsafeRawBufferPointer) {
        header(UInt8(ascii: "$"), raw.count)
        bytes.append(contentsOf: raw)
        bytes.append(13); bytes.append(10)
    }

    public mutating func appendBulk(_ string: String) {
        var s = string
        s.withUTF8 { appendBulk(UnsafeRawBufferPointer($0)) }
    }

    private mutating func header(_ kind: UInt8, _ n: Int) {
        bytes.append(kind)
        appendDecimal(n)
        bytes.append(13); bytes.append(10)
    }

    mutating func appendDecimal(_ value: Int) {
        Self.withDecimal(value) { bytes.append(contentsOf: $0) }
    }

    /// Calls `body` with the ASCII digits of `value`, formatted on the stack (no allocation).
    static func withDecimal(_ value: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { d in
            var v = value.magnitude
            var i = 24
            repeat {
                i -= 1
                d[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            if value < 0 { i -= 1; d[i] = UInt8(ascii: "-") }
            body(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(d)[i..<24]))
        }
    }
}

extension String: RedisArgument {
    public func write(to encoder: inout RedisCommandEncoder) { encoder.appendBulk(self) }
}

extension Substring: RedisArgument {
    public func write(to encoder: inout RedisCommandEncoder) { encoder.appendBulk(String(self)) }
}

extension Int: RedisArgument {
    public func write(to encoder: inout RedisCommandEncoder) {
        RedisCommandEncoder.withDecimal(self) { encoder.appendBulk($0) }
    }
}

extension Double: RedisArgument {
    public func write(to encoder: inout RedisCommandEncoder) { encoder.appendBulk("\(self)") }
}

extension Array: RedisArgument where Element == UInt8 {
    public func write(to encoder: inout RedisCommandEncoder) { withUnsafeBytes { encoder.appendBulk($0) } }
}

extension Data: RedisArgument {
    public func write(to encoder: inout RedisCommandEncoder) { withUnsafeBytes { encoder.appendBulk($0) } }
}
