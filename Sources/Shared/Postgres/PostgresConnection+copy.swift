import CLibPQ
import ETLSupport
import Foundation

/// Streams bytes into a running `COPY ... FROM STDIN`, a bounded chunk at a time.
///
/// Rows are buffered up to `chunkSize` bytes and then handed to libpq, so memory stays flat
/// however many rows the producer writes.
public final class PostgresCopyWriter {
    private let conn: OpaquePointer
    private var buffer: [UInt8]
    private let chunkSize: Int
    /// Set when libpq says the COPY is no longer in progress (the server ended it with an error).
    fileprivate(set) var serverEnded = false
    /// Bytes handed to libpq so far.
    public private(set) var bytesSent = 0

    fileprivate init(conn: OpaquePointer, chunkSize: Int) {
        self.conn = conn
        self.chunkSize = max(chunkSize, 1024)
        buffer = []
        buffer.reserveCapacity(self.chunkSize + 4096)
    }

    /// Appends raw bytes (already in the COPY format the statement names).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= chunkSize { try flush() }
    }

    /// Appends raw bytes.
    public func write(_ bytes: [UInt8]) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= chunkSize { try flush() }
    }

    /// Appends a string's UTF-8 bytes.
    public func write(_ text: String) throws {
        var t = text
        t.withUTF8 { buffer.append(contentsOf: $0) }
        if buffer.count >= chunkSize { try flush() }
    }

    /// Appends one row in COPY's text format: fields joined by tabs, NULL as `\N`, and
    /// backslash, tab, newline and carriage return escaped.
    public func writeRow(_ fields: [String?]) throws {
        for (i, f) in fields.enumerated() {
            if i > 0 { buffer.append(9) }
            guard var f else {
                buffer.append(92)
                buffer.append(78)  // \N
                continue
            }
            f.withUTF8 { utf8 in
                for b in utf8 {
                    switch b {
                    case 92:
                        buffer.append(92)
                        buffer.append(92)
                    case 9:
                        buffer.append(92)
                        buffer.append(116)
                    case 10:
                        buffer.append(92)
                        buffer.append(110)
                    case 13:
                        buffer.append(92)
                        buffer.append(114)
                    default: buffer.append(b)
                    }
                }
            }
        }
        buffer.append(10)
        if buffer.count >= chunkSize { try flush() }
    }

    /// Appends one row in COPY's text format from a CSV line whose fields need neither unquoting
    /// nor escaping (no quote, backslash, tab or line break: its commas are its only separators),
    /// followed by `suffix` (more fields, each after a tab, already in COPY's text format).
    public func writeRow(plainCSV line: UnsafeBufferPointer<UInt8>, suffix: [UInt8] = []) throws {
        let start = buffer.count
        buffer.append(contentsOf: line)
        buffer.withUnsafeMutableBufferPointer { b in
            for i in start..<b.count where b[i] == 44 { b[i] = 9 }
        }
        buffer.append(contentsOf: suffix)
        buffer.append(10)
        if buffer.count >= chunkSize { try flush() }
    }

    /// Hands the buffered bytes to libpq.
    public func flush() throws {
        guard !buffer.isEmpty, !serverEnded else {
            buffer.removeAll(keepingCapacity: true)
            return
        }
        let rc = buffer.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                PQputCopyData(conn, $0, Int32(b.count))
            }
        }
        bytesSent += buffer.count
        buffer.removeAll(keepingCapacity: true)
        if rc != 1 {
            serverEnded = true
            throw CopyEnded()
        }
    }

    /// Thrown out of the producer when the server stopped the COPY; `copyIn` replaces it with the
    /// server's own error.
    struct CopyEnded: Error {}
}

extension PostgresConnection {
    /// Runs `sql` (a `COPY ... FROM STDIN` statement) and streams what `produce` writes into it.
    /// Returns the number of rows the server stored.
    ///
    /// If `produce` throws, the COPY is aborted (nothing is stored) and its error is rethrown. If the
    /// server rejects the data, the `PostgresError` has code `.copyFailed`, the SQLSTATE and
    /// `copyLine`, the 1-based line of the input at fault.
    ///
    /// ```swift
    /// let n = try pg.copyIn("COPY sales (id, qty) FROM STDIN") { w in
    ///     for s in sales { try w.writeRow([String(s.id), String(s.qty)]) }
    /// }
    /// ```
    @discardableResult
    public func copyIn(
        _ sql: String, chunkSize: Int = 256 * 1024, _ produce: (PostgresCopyWriter) throws -> Void
    ) throws -> Int {
        let h = try liveHandle()
        guard let start = PQexec(h, sql) else {
            throw lostOrFailed(message: String(cString: PQerrorMessage(h)), sql: sql)
        }
        let startStatus = PQresultStatus(start)
        guard startStatus == PGRES_COPY_IN else {
            defer { PQclear(start) }
            if startStatus == PGRES_FATAL_ERROR || startStatus == PGRES_NONFATAL_ERROR {
                throw error(from: start, sql: sql)
            }
            throw PostgresError(
                code: .misuse, message: "copyIn needs a COPY ... FROM STDIN statement", endpoint: endpoint, query: sql)
        }
        PQclear(start)

        let writer = PostgresCopyWriter(conn: h, chunkSize: chunkSize)
        var producerError: Error?
        do {
            try produce(writer)
            try writer.flush()
        } catch is PostgresCopyWriter.CopyEnded {
            // The server already ended the COPY; its error comes from PQgetResult below.
        } catch {
            producerError = error
        }
        if !writer.serverEnded {
            // Only the error's type goes to the server (and its log), not its text.
            let reason = producerError.map { "aborted by the client (\(type(of: $0)))" }
            let rc = reason.map { PQputCopyEnd(h, $0) } ?? PQputCopyEnd(h, nil)
            if rc != 1 && producerError == nil {
                throw lostOrFailed(message: String(cString: PQerrorMessage(h)), sql: sql)
            }
        }
        // Drain every result so the connection is ready for the next statement.
        var failure: PostgresError?
        var rows = 0
        while isConnected, let r = PQgetResult(h) {
            defer { PQclear(r) }
            switch PQresultStatus(r) {
            case PGRES_COMMAND_OK:
                rows = Int(String(cString: PQcmdTuples(r))) ?? 0
            case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
                // Still in COPY (the end was not accepted): the session cannot recover; drop it.
                if failure == nil { failure = lostOrFailed(message: "COPY could not be ended", sql: sql) }
                close()
            default:
                if failure == nil { failure = error(from: r, sql: sql, code: .copyFailed) }
            }
        }
        if let producerError { throw producerError }
        if let failure { throw failure }
        if writer.serverEnded {
            throw PostgresError(
                code: .copyFailed, message: "the server ended the COPY without a result", endpoint: endpoint, query: sql
            )
        }
        return rows
    }
}
