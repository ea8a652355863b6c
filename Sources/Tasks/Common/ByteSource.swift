import CZlib
import Foundation

/// A file's bytes, read front to back: the file itself, or for a gzipped one (`.gz`) its
/// decompressed stream through zlib (concatenated members included). Offsets are in what is read:
/// a gzipped file's are offsets in its decompressed stream. Seeking a plain file is `lseek`; a
/// gzipped one decompresses and drops the bytes before the offset.
public final class ByteSource {
    private enum Handle {
        case plain(Int32)
        case gzip(gzFile)
    }
    private let handle: Handle
    public let path: String
    public var isGzip: Bool {
        if case .gzip = handle { return true }
        return false
    }

    /// Whether `path` is read as gzip when not said otherwise: its name ends with `.gz`.
    public static func isGzipName(_ path: String) -> Bool { path.hasSuffix(".gz") }

    public init(path: String, gzip: Bool? = nil) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw UnreadableFile("cannot open \(path): \(String(cString: strerror(errno)))") }
        if gzip ?? Self.isGzipName(path) {
            guard let gz = gzdopen(fd, "rb") else {
                close(fd)
                throw UnreadableFile("cannot open \(path) as gzip: out of memory")
            }
            gzbuffer(gz, 256 << 10)
            handle = .gzip(gz)
        } else {
            handle = .plain(fd)
        }
    }

    deinit {
        switch handle {
        case .plain(let fd): close(fd)
        case .gzip(let gz): gzclose(gz)
        }
    }

    /// Reads up to `count` bytes into `buffer`; 0 at the end.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        switch handle {
        case .plain(let fd):
            let n = systemRead(fd, buffer, count)
            if n < 0 { throw UnreadableFile("cannot read \(path): \(String(cString: strerror(errno)))") }
            return n
        case .gzip(let gz):
            let n = gzread(gz, buffer, UInt32(min(count, 1 << 30)))
            if n < 0 {
                var code: Int32 = 0
                let message = gzerror(gz, &code).map { String(cString: $0) } ?? "error \(code)"
                throw UnreadableFile(
                    "cannot read \(path) as gzip: \(message). Fix: check the file (gzip -t), or restore it")
            }
            // The end of the file in the middle of a gzip stream: cut short (or still being written).
            if n == 0 {
                var code: Int32 = 0
                _ = gzerror(gz, &code)
                if code == Z_BUF_ERROR {
                    throw UnreadableFile(
                        "cannot read \(path) as gzip: it ends in the middle of its compressed stream (cut short,"
                            + " or still being written). Fix: check the file (gzip -t), or restore it",
                        cutShort: true)
                }
            }
            return Int(n)
        }
    }

    /// Moves to `offset` (from the start). Returns false when the stream ends before it.
    @discardableResult
    public func seek(to offset: Int64) throws -> Bool {
        switch handle {
        case .plain(let fd):
            guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else {
                throw UnreadableFile("cannot seek in \(path): \(String(cString: strerror(errno)))")
            }
            return true
        case .gzip:
            // zlib's streams seek forward only by decompressing: drop the bytes before the offset.
            let size = 1 << 20
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            defer { scratch.deallocate() }
            var left = offset
            while left > 0 {
                let n = try read(into: scratch, count: Int(min(Int64(size), left)))
                if n == 0 { return false }
                left -= Int64(n)
            }
            return true
        }
    }
}

/// `read(2)`, named apart from `ByteSource.read(into:count:)`.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}

/// A file that cannot be opened or read (or decompressed), with the reason.
public struct UnreadableFile: Error, CustomStringConvertible {
    public let description: String
    /// The file ends in the middle of a gzip stream: cut short, or still being written.
    public let cutShort: Bool
    public init(_ description: String, cutShort: Bool = false) {
        self.description = description
        self.cutShort = cutShort
    }
}
