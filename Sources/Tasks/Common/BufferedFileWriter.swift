import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Writes bytes to a file through a large buffer; the file appears under its name only when
/// `commit` renames the temporary file, so a reader never sees half a file.
final class BufferedFileWriter {
    let path: String
    let temporary: String
    private let fd: Int32
    var buffer: [UInt8] = []
    private(set) var written: Int64 = 0

    init(path: String) throws {
        self.path = path
        temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw PipelineError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(1 << 21)
    }

    deinit {
        close(fd)
        unlink(temporary)
    }

    @inline(__always) func maybeFlush() throws { if buffer.count >= 1 << 20 { try flush() } }

    func flush() throws {
        try buffer.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = write(fd, b.baseAddress! + off, b.count - off)
                if n <= 0 { throw PipelineError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
                off += n
            }
        }
        written += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes what is buffered, makes it durable (`fsync`), renames the file into place, and makes
    /// the rename durable too (`fsync` of the folder): after a crash the name holds the old bytes or
    /// all of the new ones.
    func commit() throws {
        try flush()
        guard fsync(fd) == 0 else {
            throw PipelineError("cannot fsync \(temporary): \(String(cString: strerror(errno)))")
        }
        guard rename(temporary, path) == 0 else {
            throw PipelineError("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
        }
        let dir = (path as NSString).deletingLastPathComponent
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    func append(_ s: String) { buffer.append(contentsOf: s.utf8) }
}
