import Foundation

/// Reads a file's lines as bytes, a buffer at a time, from a byte offset up to (not including) the
/// first line that starts at or after `end`. Each line comes with its start offset; memory stays at
/// one buffer whatever the file's size. A line longer than the buffer is handed over cut, with
/// `truncated` set (the parser rejects it as too long). A gzipped file (`.gz`, or `gzip: true`) is
/// read decompressed, its offsets in the decompressed stream (see `ByteSource`).
public final class LineReader {
    private let source: ByteSource
    private var buffer: UnsafeMutableRawBufferPointer
    private var filled = 0
    private var position = 0
    /// File offset of buffer[0].
    private var bufferOffset: Int64
    private let end: Int64
    private var eof = false
    public let path: String

    /// The file offset where the next line starts (after a cut line: after its end).
    public var offset: Int64 { bufferOffset + Int64(position) }

    /// Whether the stream ended before `from` (a file shorter than the offset asked for).
    public private(set) var startedPastEnd = false

    public init(
        path: String, from start: Int64 = 0, end: Int64 = .max, bufferSize: Int = 1 << 20, gzip: Bool? = nil
    ) throws {
        self.path = path
        let source = try ByteSource(path: path, gzip: gzip)
        self.source = source
        if start > 0, try !source.seek(to: start) {
            startedPastEnd = true
            eof = true
        }
        bufferOffset = start
        self.end = end
        buffer = .allocate(byteCount: max(bufferSize, 4096), alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// A line without its line break: LF, CRLF, or any run of them at its end. (Decoded, "\r\n" is
    /// one `Character`, which a test for "\n" or "\r" does not match: strip the bytes instead.)
    public static func withoutLineBreak(_ line: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var end = line.count
        while end > 0, line[end - 1] == 10 || line[end - 1] == 13 { end -= 1 }
        return UnsafeBufferPointer(rebasing: line[0..<end])
    }

    /// Calls `body` with each line (including its `\n` when present), its start offset and
    /// whether it was cut; stops at `end` or at the end of the file, or when `body` returns false.
    /// A cut line's bytes are valid only during the call: its rest is skipped after it.
    public func forEachLine(_ body: (UnsafeBufferPointer<UInt8>, Int64, Bool) throws -> Bool) throws {
        while true {
            let lineStart = bufferOffset + Int64(position)
            if lineStart >= end { return }
            // Find the newline in what is buffered; refill when there is none.
            var nl = -1
            while true {
                if position < filled, let p = memchr(buffer.baseAddress! + position, 10, filled - position) {
                    nl = buffer.baseAddress!.distance(to: p)
                    break
                }
                if eof || (position == 0 && filled == buffer.count) { break }
                try refill()
                if eof && position >= filled { return }
            }
            let bytes = buffer.bindMemory(to: UInt8.self)
            if nl >= 0 {
                let line = UnsafeBufferPointer(rebasing: bytes[position...nl])
                position = nl + 1
                if try !body(line, lineStart, false) { return }
            } else if position < filled {
                // The last line without a newline, or a line longer than the buffer.
                let cut = !eof
                let line = UnsafeBufferPointer(rebasing: bytes[position..<filled])
                position = filled
                let goOn = try body(line, lineStart, cut)
                // The rest of a cut line is skipped before returning, so `offset` is the next line's.
                if cut { try skipRestOfLine() }
                if !goOn { return }
            } else {
                return
            }
        }
    }

    private func refill() throws {
        if position > 0 {
            let keep = filled - position
            if keep > 0 { memmove(buffer.baseAddress!, buffer.baseAddress! + position, keep) }
            bufferOffset += Int64(position)
            filled = keep
            position = 0
        }
        let n = try source.read(into: buffer.baseAddress! + filled, count: buffer.count - filled)
        if n == 0 { eof = true }
        filled += n
    }

    /// After a cut line: drops bytes up to and including the next newline.
    private func skipRestOfLine() throws {
        while true {
            bufferOffset += Int64(filled)
            filled = 0
            position = 0
            let n = try source.read(into: buffer.baseAddress!, count: buffer.count)
            if n <= 0 {
                eof = true
                return
            }
            filled = n
            if let p = memchr(buffer.baseAddress!, 10, n) {
                position = buffer.baseAddress!.distance(to: p) + 1
                return
            }
        }
    }
}
