import CLibPQ
import ETLSupport
import Foundation
import Logging

/// One blocking connection to Postgres through libpq. Owns its `PGconn*`.
///
/// 1. Connects from a `PostgresConfig` (the password goes only to `PQconnectdbParams`).
/// 2. Runs parameterised statements (`PQexecParams`), never SQL built from values.
/// 3. Notices a lost connection, reports it as `.connectionLost`, and reconnects (with backoff)
///    on the next call made outside a transaction.
///
/// Not thread-safe: use one connection per thread or task.
///
/// ```swift
/// let pg = try PostgresConnection(config: PostgresConfig(environment: env))
/// let rows = try pg.query("SELECT id, name FROM company WHERE cuit = $1", [cuit]).rows
/// ```
public final class PostgresConnection {
    public let config: PostgresConfig
    let logger: Logger
    private var handle: OpaquePointer?
    /// How many `transaction` blocks are open; a lost connection inside one is not silently replaced.
    private(set) var transactionDepth = 0
    private let reconnectBackoff = Backoff(base: 0.05, cap: 2, jitter: 0.3)

    /// Runs after every (re)connect, before the session is used: a task's connection registers its
    /// backend under the attempt's lease there, and refuses to go on when the lease was taken over.
    /// A throw closes the session.
    private let onConnect: ((PostgresConnection) throws -> Void)?

    public init(
        config: PostgresConfig, logger: Logger = Logger(label: "etl.postgres"),
        onConnect: ((PostgresConnection) throws -> Void)? = nil
    ) throws {
        self.config = config
        self.logger = logger
        self.onConnect = onConnect
        handle = try Self.open(config)
        try connected()
    }

    /// How many sessions this connection has had (1 after `init`, one more per reconnect): work
    /// that holds session state (a session advisory lock) checks it to notice a silent reconnect.
    public private(set) var sessions = 0

    private func connected() throws {
        sessions += 1
        guard let onConnect else { return }
        do { try onConnect(self) } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Closes the connection; safe to call more than once.
    public func close() {
        if let h = handle {
            PQfinish(h)
            handle = nil
        }
        prepared.removeAll()  // prepared statements die with the session
    }

    /// True while the connection is open and healthy as far as libpq knows.
    public var isConnected: Bool {
        guard let h = handle else { return false }
        return PQstatus(h) == CONNECTION_OK
    }

    /// The server's process id for this session (what `pg_terminate_backend` takes).
    public var backendPID: Int32 { handle.map { PQbackendPID($0) } ?? 0 }

    /// `user@host:port/db`, never the password.
    public var endpoint: String { config.description }

    // MARK: Connecting

    private static func open(_ config: PostgresConfig) throws -> OpaquePointer {
        let params = config.libpqParameters
        let keys = params.map { strdup($0.0) }
        let values = params.map { strdup($0.1) }
        defer {
            for k in keys { free(k) }
            // Wipe the password copy before freeing it.
            for v in values {
                if let v { memset(v, 0, strlen(v)) }
                free(v)
            }
        }
        var keyPtrs: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valuePtrs: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        let conn = keyPtrs.withUnsafeMutableBufferPointer { k in
            valuePtrs.withUnsafeMutableBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 0)
            }
        }
        guard let conn else {
            throw PostgresError(
                code: .connectionFailed, message: "libpq could not allocate a connection", endpoint: config.description)
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.scrub(String(cString: PQerrorMessage(conn)), config: config)
            PQfinish(conn)  // libpq allocates even on failure; free it
            let auth =
                message.contains("password authentication failed") || message.contains("no password supplied")
                || message.contains("authentication failed")
            throw PostgresError(
                code: auth ? .authenticationFailed : .connectionFailed,
                message: message.trimmingCharacters(in: .whitespacesAndNewlines)
                    .replacingOccurrences(of: "\n", with: "; "),
                endpoint: config.description)
        }
        return conn
    }

    /// Removes the password from a message, should a server or library ever echo it.
    static func scrub(_ message: String, config: PostgresConfig) -> String {
        guard let pw = config.password, pw.count >= 3 else { return message }
        return message.replacingOccurrences(of: pw, with: "***")
    }

    /// Drops the current connection and opens a new one, retrying with backoff until
    /// `config.reconnectTimeout` has passed.
    public func reconnect() throws {
        close()
        let config = config
        handle = try reconnectBackoff.retry(
            timeout: config.reconnectTimeout, server: "Postgres", endpoint: endpoint, logger: logger,
            isRetryable: { ($0 as? PostgresError)?.code == .connectionFailed }, { try Self.open(config) })
        try connected()
    }

    /// A healthy handle: reconnects first if the last call found the connection broken, unless a
    /// transaction is open (its work is gone with the old session, so that must be an error).
    func liveHandle() throws -> OpaquePointer {
        if let h = handle, PQstatus(h) == CONNECTION_OK { return h }
        if transactionDepth > 0 {
            throw PostgresError(
                code: .connectionLost, message: "the connection broke inside a transaction; its work was rolled back",
                endpoint: endpoint)
        }
        try reconnect()
        return handle!
    }

    // MARK: Statements

    /// Runs one statement with `$1, $2, ...` parameters and returns its rows.
    ///
    /// Statements with parameters are prepared once per session, so the server parses them once;
    /// after five runs Postgres may keep one generic plan for good. `planEachTime` opts out for
    /// statements whose best plan changes with their input or with the tables' growth (a join
    /// against an array of keys, planned while a table was empty, stays a sequential scan).
    @discardableResult
    public func query(
        _ sql: String, _ parameters: [any PostgresEncodable] = [], planEachTime: Bool = false
    ) throws -> PostgresResult {
        let h = try liveHandle()
        let params = parameters.map(\.postgresParameter)
        if !params.isEmpty, !planEachTime, let name = try preparedName(sql, params, h) {
            let result = Self.withCParameters(params) { _, values, lengths, formats in
                PQexecPrepared(h, name, Int32(params.count), values, lengths, formats, 0)
            }
            return try consume(result, sql: sql)
        }
        let result = Self.withCParameters(params) { types, values, lengths, formats in
            PQexecParams(h, sql, Int32(params.count), types, values, lengths, formats, 0)
        }
        return try consume(result, sql: sql)
    }

    /// Prepared statement names by SQL text, for this session only.
    private var prepared: [String: String] = [:]
    private static let maxPrepared = 512

    private func preparedName(_ sql: String, _ params: [PostgresParameter], _ h: OpaquePointer) throws -> String? {
        if let name = prepared[sql] { return name }
        guard prepared.count < Self.maxPrepared else { return nil }
        let name = "etl_\(prepared.count)"
        var types = params.map { p -> Oid in if case .bytes = p { return 17 } else { return 0 } }
        let result = types.withUnsafeMutableBufferPointer {
            PQprepare(h, name, sql, Int32(params.count), $0.baseAddress)
        }
        _ = try consume(result, sql: sql)
        prepared[sql] = name
        return name
    }

    /// Whether table (or view) `qualified` (`schema.name`) exists: a query naming a missing table fails
    /// when it is parsed, so code that may run before its tables are made asks first.
    public func tableExists(_ qualified: String) throws -> Bool {
        try query("SELECT to_regclass($1) IS NOT NULL", [qualified]).rows[0].decode(Bool.self, 0)
    }

    /// Runs one or more `;`-separated statements without parameters (DDL, migrations).
    public func execute(script sql: String) throws {
        let h = try liveHandle()
        let result = PQexec(h, sql)
        _ = try consume(result, sql: sql)
    }

    /// Runs `;`-separated statements without parameters in one round trip and returns each one's
    /// result, in order. The first error is thrown once the server has answered the whole script.
    /// The statements after a failed one do not run; outside a transaction the script is one
    /// implicit transaction, so the ones before it are rolled back too.
    public func executeEach(script sql: String) throws -> [PostgresResult] {
        let h = try liveHandle()
        guard PQsendQuery(h, sql) == 1 else {
            throw lostOrFailed(message: String(cString: PQerrorMessage(h)), sql: sql)
        }
        var results: [PostgresResult] = []
        var failure: Error?
        // (`consume` drops the session on a COPY result: there is nothing more to read then.)
        while handle != nil, let r = PQgetResult(h) {
            do {
                let one = try consume(r, sql: sql)
                if failure == nil { results.append(one) }
            } catch {
                if failure == nil { failure = error }
            }
        }
        if let failure { throw failure }
        if PQstatus(h) != CONNECTION_OK { throw lostOrFailed(message: String(cString: PQerrorMessage(h)), sql: sql) }
        return results
    }

    /// Turns a `PGresult*` into rows or an error, and frees it.
    private func consume(_ result: OpaquePointer?, sql: String) throws -> PostgresResult {
        guard let result else {
            throw lostOrFailed(message: handle.map { String(cString: PQerrorMessage($0)) } ?? "no connection", sql: sql)
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return copyOut(result)
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            // The session is mid-COPY and cannot run anything else: drop it (the next call reconnects).
            close()
            throw PostgresError(
                code: .misuse, message: "COPY statements go through copyIn(_:_:)", endpoint: endpoint, query: sql)
        default:
            throw error(from: result, sql: sql)
        }
    }

    private func copyOut(_ result: OpaquePointer) -> PostgresResult {
        let nRows = Int(PQntuples(result))
        let nCols = Int(PQnfields(result))
        let columns = (0..<nCols).map { String(cString: PQfname(result, Int32($0))) }
        var cells = [String?]()
        cells.reserveCapacity(nRows * nCols)
        for r in 0..<nRows {
            for c in 0..<nCols {
                if PQgetisnull(result, Int32(r), Int32(c)) == 1 {
                    cells.append(nil)
                } else {
                    let len = Int(PQgetlength(result, Int32(r), Int32(c)))
                    let ptr = PQgetvalue(result, Int32(r), Int32(c))!
                    cells.append(
                        ptr.withMemoryRebound(to: UInt8.self, capacity: len) {
                            String(decoding: UnsafeBufferPointer(start: $0, count: len), as: UTF8.self)
                        })
                }
            }
        }
        let storage = PostgresRow.Storage(columns: columns, cells: cells, endpoint: endpoint)
        let tag = String(cString: PQcmdStatus(result))
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresResult(
            columns: columns, rows: (0..<nRows).map { PostgresRow(storage: storage, index: $0) },
            affectedRows: affected, commandTag: tag)
    }

    /// A server error from a failed result, or `.connectionLost` when the session died under it.
    func error(from result: OpaquePointer, sql: String?, code: PostgresError.Code = .server) -> PostgresError {
        func field(_ f: UInt8) -> String? {
            guard let p = PQresultErrorField(result, Int32(f)) else { return nil }
            return Self.scrub(String(cString: p), config: config)
        }
        let message =
            field(UInt8(ascii: "M")) ?? Self.scrub(String(cString: PQresultErrorMessage(result)), config: config)
        if let h = handle, PQstatus(h) != CONNECTION_OK {
            return PostgresError(
                code: .connectionLost, message: message.trimmingCharacters(in: .whitespacesAndNewlines),
                endpoint: endpoint,
                sqlState: field(UInt8(ascii: "C")), query: sql)
        }
        let context = field(UInt8(ascii: "W"))
        return PostgresError(
            code: code, message: message.trimmingCharacters(in: .whitespacesAndNewlines), endpoint: endpoint,
            sqlState: field(UInt8(ascii: "C")), detail: field(UInt8(ascii: "D")), hint: field(UInt8(ascii: "H")),
            context: context, copyLine: code == .copyFailed ? context.flatMap(Self.copyLine(fromContext:)) : nil,
            query: sql)
    }

    func lostOrFailed(message: String, sql: String?) -> PostgresError {
        let text = Self.scrub(message, config: config).trimmingCharacters(in: .whitespacesAndNewlines)
        if let h = handle, PQstatus(h) == CONNECTION_OK {
            return PostgresError(code: .server, message: text, endpoint: endpoint, query: sql)
        }
        return PostgresError(
            code: .connectionLost, message: text.isEmpty ? "connection lost" : text, endpoint: endpoint, query: sql)
    }

    /// Reads `N` from a COPY context such as `COPY sales, line 5, column qty: "x"`.
    static func copyLine(fromContext context: String) -> Int? {
        guard let r = context.range(of: ", line ") else { return nil }
        let digits = context[r.upperBound...].prefix(while: \.isNumber)
        return Int(digits)
    }

    /// Lays out parameters as libpq wants them: text values as C strings (format 0, type left to
    /// the server), bytes as binary `bytea` (format 1, oid 17).
    private static func withCParameters<R>(
        _ params: [PostgresParameter],
        _ body: (
            UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        if params.isEmpty { return body(nil, nil, nil, nil) }
        var types = [Oid](repeating: 0, count: params.count)
        var lengths = [Int32](repeating: 0, count: params.count)
        var formats = [Int32](repeating: 0, count: params.count)
        var buffers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: params.count)
        defer { for b in buffers { free(b) } }
        for (i, p) in params.enumerated() {
            switch p {
            case .null:
                break
            case .text(let s):
                buffers[i] = strdup(s)
            case .bytes(let b):
                let mem = malloc(max(b.count, 1))!.assumingMemoryBound(to: CChar.self)
                b.withUnsafeBytes { raw in if let base = raw.baseAddress { memcpy(mem, base, b.count) } }
                buffers[i] = mem
                lengths[i] = Int32(b.count)
                formats[i] = 1
                types[i] = 17
            }
        }
        let values = buffers.map { UnsafePointer($0) }
        return values.withUnsafeBufferPointer { v in
            body(types, v.baseAddress, lengths, formats)
        }
    }

    // MARK: Transactions

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    /// Nested calls become savepoints.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let savepoint = transactionDepth > 0 ? "etl_sp_\(transactionDepth)" : nil
        try query(savepoint.map { "SAVEPOINT \($0)" } ?? "BEGIN")
        // The depth stays up until COMMIT has gone through, so a connection lost meanwhile is
        // reported instead of silently replaced (a COMMIT on a fresh session would "succeed").
        transactionDepth += 1
        defer { transactionDepth -= 1 }
        let value: T
        do {
            value = try body(self)
        } catch {
            if isConnected {
                // Roll back (and free the savepoint); if even that fails the session is unusable.
                do {
                    if let savepoint {
                        try query("ROLLBACK TO SAVEPOINT \(savepoint)")
                        try query("RELEASE SAVEPOINT \(savepoint)")
                    } else {
                        try query("ROLLBACK")
                    }
                } catch { close() }
            }
            throw error
        }
        do {
            try query(savepoint.map { "RELEASE SAVEPOINT \($0)" } ?? "COMMIT")
        } catch {
            if isConnected {
                if let savepoint {
                    _ = try? query("ROLLBACK TO SAVEPOINT \(savepoint)")
                    _ = try? query("RELEASE SAVEPOINT \(savepoint)")
                } else {
                    _ = try? query("ROLLBACK")
                }
            }
            throw error
        }
        return value
    }

}
