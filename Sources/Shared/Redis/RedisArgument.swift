import ETLSupport
import Foundation

/// A value that can be one argument of a Redis command. Arguments are length-prefixed, so any
/// bytes (NUL included) pass through unchanged.
public protocol RedisArgument {
    func write(to encoder: RedisCommandEncoder)
}

/// Builds commands in the Redis protocol (RESP arrays of bulk strings) into one reusable buffer.
///
/// A class over raw memory rather than a `[UInt8]`: the pipelined hot path appends a few bytes at
/// a time, and this keeps each append to a bounds check and a `memcpy`.
public final class RedisCommandEncoder {
    // Internal-but-inlinable so that callers' generic argument packs are specialised in their
    // own module instead of going through value witness tables on every argument.
    @usableFromInline var storage: UnsafeMutablePointer<UInt8>
    @usableFromInline var capacity: Int
    @usableFromInline var used = 0
    @usableFromInline var commands = 0
    /// Bytes encoded since the last reset.
    public var count: Int { used }
    /// Commands encoded since the last reset.
    public var commandCount: Int { commands }

    public init(capacity: Int = 4096) {
        self.capacity = max(capacity, 64)
        storage = .allocate(capacity: self.capacity)
    }

    deinit { storage.deallocate() }

    /// A copy of the encoded bytes (for tests and debugging).
    public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: storage, count: used)) }

    /// Calls `body` with the encoded bytes, without copying them.
    public func withEncoded<R>(_ body: (UnsafePointer<CChar>, Int) throws -> R) rethrows -> R {
        try storage.withMemoryRebound(to: CChar.self, capacity: used) { try body($0, used) }
    }

    /// Forgets what was encoded; large buffers left by a big pipeline are given back.
    public func reset() {
        used = 0
        commands = 0
        if capacity > 1 << 20 {
            storage.deallocate()
            capacity = 4096
            storage = .allocate(capacity: capacity)
        }
    }

    /// Encodes one command from its arguments (the first is the command name). The generic form
    /// avoids boxing each argument, which matters on the pipelined hot path.
    @inlinable
    public func encode<each A: RedisArgument>(_ args: repeat each A) {
        var n = 0
        for _ in repeat each args { n += 1 }
        header(UInt8(ascii: "*"), n)
        for a in repeat each args { a.write(to: self) }
        commands += 1
    }

    /// Encodes one command from a list of arguments built at run time.
    public func encode(_ args: [any RedisArgument]) {
        header(UInt8(ascii: "*"), args.count)
        for a in args { a.write(to: self) }
        commands += 1
    }

    @inlinable
    public func appendBulk(_ raw: UnsafeRawBufferPointer) {
        header(UInt8(ascii: "$"), raw.count)
        reserve(raw.count + 2)
        if let base = raw.baseAddress {
            (storage + used).update(from: base.assumingMemoryBound(to: UInt8.self), count: raw.count)
        }
        used += raw.count
        storage[used] = 13
        storage[used + 1] = 10
        used += 2
    }

    @inlinable
    public func appendBulk(_ string: String) {
        // Native strings expose their UTF-8 in place; only bridged or lazy ones need a copy.
        if string.utf8.withContiguousStorageIfAvailable({ appendBulk(UnsafeRawBufferPointer($0)) }) != nil { return }
        var s = string
        s.withUTF8 { appendBulk(UnsafeRawBufferPointer($0)) }
    }

    /// Writes `$123\r\n` or `*3\r\n`.
    @inlinable
    func header(_ kind: UInt8, _ n: Int) {
        reserve(24)
        storage[used] = kind
        used += 1
        appendDecimal(n)
        storage[used] = 13
        storage[used + 1] = 10
        used += 2
    }

    /// Writes the decimal digits of `value`; the caller has reserved room for them.
    @inlinable
    func appendDecimal(_ value: Int) {
        reserve(21)
        if value < 0 {
            storage[used] = UInt8(ascii: "-")
            used += 1
        }
        var v = value.magnitude
        var digits = 1
        var t = v
        while t >= 10 {
            t /= 10
            digits += 1
        }
        var i = used + digits - 1
        repeat {
            storage[i] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
            i -= 1
        } while v > 0
        used += digits
    }

    @inlinable @inline(__always)
    func reserve(_ extra: Int) {
        if used + extra > capacity { grow(used + extra) }
    }

    @usableFromInline
    func grow(_ needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let fresh = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        fresh.update(from: storage, count: used)
        storage.deallocate()
        storage = fresh
        capacity = newCapacity
    }
}

extension String: RedisArgument {
    @inlinable
    public func write(to encoder: RedisCommandEncoder) { encoder.appendBulk(self) }
}

extension Substring: RedisArgument {
    public func write(to encoder: RedisCommandEncoder) { encoder.appendBulk(String(self)) }
}

extension Int: RedisArgument {
    public func write(to encoder: RedisCommandEncoder) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { d in
            var v = magnitude
            var i = 24
            repeat {
                i -= 1
                d[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            if self < 0 {
                i -= 1
                d[i] = UInt8(ascii: "-")
            }
            encoder.appendBulk(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(d)[i..<24]))
        }
    }
}

extension Double: RedisArgument {
    public func write(to encoder: RedisCommandEncoder) { encoder.appendBulk("\(self)") }
}

extension Array: RedisArgument where Element == UInt8 {
    public func write(to encoder: RedisCommandEncoder) { withUnsafeBytes { encoder.appendBulk($0) } }
}

extension Data: RedisArgument {
    public func write(to encoder: RedisCommandEncoder) { withUnsafeBytes { encoder.appendBulk($0) } }
}
