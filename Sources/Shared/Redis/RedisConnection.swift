import CHiredis
import ETLSupport
import Foundation
import Logging

/// One blocking connection to Redis through hiredis. Owns its `redisContext*`.
///
/// 1. Connects from a `RedisConfig`, sends `AUTH` and `SELECT`.
/// 2. Sends commands by argument list (binary-safe) and returns typed replies.
/// 3. Pipelines: many commands written at once, their replies read in order.
/// 4. Blocking commands get a socket timeout of their own, so a call never hangs the process.
/// 5. After a broken connection, the next call reconnects with backoff.
///
/// Not thread-safe: use one connection per thread or task.
///
/// ```swift
/// let redis = try RedisConnection(config: RedisConfig(environment: env))
/// try redis.command("SET", "greeting", "hello")
/// let value = try redis.command("GET", "greeting").string
/// ```
public final class RedisConnection {
    public let config: RedisConfig
    let logger: Logger
    private var context: UnsafeMutablePointer<redisContext>?
    private let encoder = RedisCommandEncoder()
    private let reconnectBackoff = Backoff(base: 0.05, cap: 2, jitter: 0.3)
    /// Times this connection has been re-established after a failure.
    public private(set) var reconnects = 0

    public init(config: RedisConfig, logger: Logger = Logger(label: "etl.redis")) throws {
        // hiredis writes with write(2): a reset socket must give EPIPE, not kill the process.
        _ = Self.ignoreSIGPIPE
        self.config = config
        self.logger = logger
        context = try Self.open(config)
    }

    deinit { close() }

    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Closes the connection; safe to call more than once.
    public func close() {
        if let c = context {
            redisFree(c)
            context = nil
        }
    }

    public var isConnected: Bool { context != nil }

    /// `host:port/db`, never the password.
    public var endpoint: String { config.description }

    // MARK: Connecting

    private static func timeval(_ seconds: Double) -> Foundation.timeval {
        let whole = Int(seconds)
        return Foundation.timeval(tv_sec: whole, tv_usec: Int((seconds - Double(whole)) * 1_000_000))
    }

    private static func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    private static func open(_ config: RedisConfig) throws -> UnsafeMutablePointer<redisContext> {
        guard let c = redisConnectWithTimeout(config.host, Int32(config.port), timeval(config.commandTimeout)) else {
            throw RedisError(.connectionFailed, "hiredis could not allocate a connection", endpoint: config.description)
        }
        if c.pointee.err != 0 {
            let message = errorString(c)
            redisFree(c)
            throw RedisError(.connectionFailed, "cannot connect: \(message)", endpoint: config.description)
        }
        _ = redisSetTimeout(c, timeval(config.commandTimeout))
        _ = redisEnableKeepAlive(c)
        do {
            if let password = config.password {
                var args: [any RedisArgument] = ["AUTH"]
                if let user = config.username { args.append(user) }
                args.append(password)
                let reply = try roundTrip(c, args, endpoint: config.description)
                if let e = reply.errorMessage {
                    // Redis's own messages (WRONGPASS, invalid password) never echo the password.
                    throw RedisError(
                        .authenticationFailed, "the server refused the password (\(e))", endpoint: config.description)
                }
            }
            // Proves the session is usable and catches a server that wants a password we lack.
            let target: [any RedisArgument] = config.database != 0 ? ["SELECT", config.database] : ["PING"]
            let reply = try roundTrip(c, target, endpoint: config.description)
            if let e = reply.errorMessage {
                if e.hasPrefix("NOAUTH") {
                    throw RedisError(
                        .authenticationFailed, "the server requires a password and REDIS_URL has none",
                        endpoint: config.description)
                }
                if e.hasPrefix("LOADING") {
                    // A restarting server still reading its AOF: retryable, like a refused connection.
                    throw RedisError(
                        .connectionFailed, "the server is still loading its data", endpoint: config.description)
                }
                throw RedisError(.server, e, endpoint: config.description)
            }
        } catch {
            redisFree(c)
            throw error
        }
        return c
    }

    /// One command on a bare context, used while connecting.
    private static func roundTrip(
        _ c: UnsafeMutablePointer<redisContext>, _ args: [any RedisArgument], endpoint: String
    ) throws -> RedisReply {
        let enc = RedisCommandEncoder(capacity: 256)
        enc.encode(args)
        let rc = enc.withEncoded { redisAppendFormattedCommand(c, $0, $1) }
        var raw: UnsafeMutableRawPointer?
        guard rc == REDIS_OK, redisGetReply(c, &raw) == REDIS_OK, let raw else {
            throw RedisError(
                .connectionFailed, "connection closed during handshake: \(errorString(c))", endpoint: endpoint)
        }
        defer { freeReplyObject(raw) }
        return convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Drops the connection and opens a new one, retrying with backoff until
    /// `config.reconnectTimeout` has passed.
    public func reconnect() throws {
        close()
        let config = config
        context = try reconnectBackoff.retry(
            timeout: config.reconnectTimeout, server: "Redis", endpoint: endpoint, logger: logger,
            isRetryable: { ($0 as? RedisError)?.code == .connectionFailed }, { try Self.open(config) })
        reconnects += 1
    }

    private func liveContext() throws -> UnsafeMutablePointer<redisContext> {
        if let c = context { return c }
        try reconnect()
        return context!
    }

    // MARK: Commands

    /// Sends one command and returns its reply; an error reply is thrown as `.server`.
    @discardableResult
    public func command<each A: RedisArgument>(_ args: repeat each A) throws -> RedisReply {
        let c = try liveContext()
        encoder.reset()
        encoder.encode(repeat each args)
        try appendEncoded(c)
        let reply = try readReply(c)
        if let e = reply.errorMessage { throw serverError(e) }
        return reply
    }

    /// Sends one command and returns its reply; an error reply is thrown as `.server`.
    @discardableResult
    public func command(_ args: [any RedisArgument]) throws -> RedisReply {
        let reply = try rawCommand(args)
        if let e = reply.errorMessage { throw serverError(e) }
        return reply
    }

    /// Sends one command and returns its reply as it came, error replies included.
    public func rawCommand(_ args: [any RedisArgument]) throws -> RedisReply {
        let c = try liveContext()
        encoder.reset()
        encoder.encode(args)
        try appendEncoded(c)
        return try readReply(c)
    }

    /// Runs a blocking command (`BLPOP`, `XREADGROUP ... BLOCK`, ...) that the server ends after
    /// `seconds`; the socket waits that long plus the ordinary command timeout, then gives up with
    /// `.timeout` instead of hanging.
    @discardableResult
    public func blockingCommand(_ args: [any RedisArgument], blockFor seconds: Double) throws -> RedisReply {
        let c = try liveContext()
        _ = redisSetTimeout(c, Self.timeval(seconds + config.commandTimeout))
        defer { if let c = context { _ = redisSetTimeout(c, Self.timeval(config.commandTimeout)) } }
        return try command(args)
    }

    /// Sends every command `build` adds in one write, then reads their replies in order. Error
    /// replies are returned in place, not thrown, so one bad command does not hide the others.
    public func pipeline(_ build: (inout RedisPipeline) throws -> Void) throws -> [RedisReply] {
        encoder.reset()
        var p = RedisPipeline(encoder: encoder)
        try build(&p)
        let n = encoder.commandCount
        guard n > 0 else { return [] }
        let c = try liveContext()
        try appendEncoded(c)
        var replies = [RedisReply]()
        replies.reserveCapacity(n)
        for _ in 0..<n { replies.append(try readReply(c)) }
        return replies
    }

    /// Runs `script` with `EVALSHA`, falling back to `EVAL` (which also caches it) on `NOSCRIPT`.
    @discardableResult
    public func eval(
        _ script: RedisScript, keys: [any RedisArgument] = [], args: [any RedisArgument] = []
    ) throws -> RedisReply {
        let tail: [any RedisArgument] = [keys.count] + keys + args
        let reply = try rawCommand(["EVALSHA", script.sha1] + tail)
        if let e = reply.errorMessage {
            guard e.hasPrefix("NOSCRIPT") else { throw serverError(e) }
            logger.debug("script not cached on the server, sending its source", metadata: ["sha1": "\(script.sha1)"])
            return try command(["EVAL", script.source] + tail)
        }
        return reply
    }

    private func serverError(_ message: String) -> RedisError {
        if message.hasPrefix("NOAUTH") || message.hasPrefix("WRONGPASS") {
            return RedisError(.authenticationFailed, message, endpoint: endpoint)
        }
        return RedisError(.server, message, endpoint: endpoint)
    }

    // MARK: hiredis I/O

    private func appendEncoded(_ c: UnsafeMutablePointer<redisContext>) throws {
        let rc = encoder.withEncoded { redisAppendFormattedCommand(c, $0, $1) }
        if rc != REDIS_OK { throw broken(c) }
    }

    private func readReply(_ c: UnsafeMutablePointer<redisContext>) throws -> RedisReply {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(c, &raw) == REDIS_OK, let raw else { throw broken(c) }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Turns a failed context into an error and drops it: after an I/O error or a timeout the
    /// reply stream is out of step, so the context cannot be used again.
    private func broken(_ c: UnsafeMutablePointer<redisContext>) -> RedisError {
        let savedErrno = errno  // before anything else can change it
        let message = Self.errorString(c)
        let timedOut = c.pointee.err == REDIS_ERR_IO && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK)
        close()
        if timedOut {
            return RedisError(.timeout, "no reply within the timeout; connection dropped", endpoint: endpoint)
        }
        return RedisError(
            .connectionLost, "connection lost (\(message.isEmpty ? "closed by the server" : message))",
            endpoint: endpoint)
    }

    static func convert(_ r: UnsafePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            guard reply.len > 0, let str = reply.str else { return .bulk([]) }
            return .bulk(
                str.withMemoryRebound(to: UInt8.self, capacity: reply.len) {
                    Array(UnsafeBufferPointer(start: $0, count: reply.len))
                })
        case REDIS_REPLY_STATUS:
            // The commonest reply by far; skip decoding it.
            if reply.len == 2, let p = reply.str, p[0] == 79, p[1] == 75 { return .status("OK") }
            return .status(text(reply))
        case REDIS_REPLY_ERROR:
            return .error(text(reply))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(reply.integer))
        case REDIS_REPLY_ARRAY:
            var items = [RedisReply]()
            items.reserveCapacity(reply.elements)
            for i in 0..<reply.elements {
                if let e = reply.element[i] { items.append(convert(e)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .null
        }
    }

    private static func text(_ reply: redisReply) -> String {
        guard reply.len > 0, let str = reply.str else { return "" }
        return str.withMemoryRebound(to: UInt8.self, capacity: reply.len) {
            String(decoding: UnsafeBufferPointer(start: $0, count: reply.len), as: UTF8.self)
        }
    }
}

/// The commands of one pipeline, encoded as they are added.
public struct RedisPipeline {
    @usableFromInline let encoder: RedisCommandEncoder

    /// Adds one command.
    @inlinable
    public func add<each A: RedisArgument>(_ args: repeat each A) { encoder.encode(repeat each args) }
    /// Adds one command.
    public func add(_ args: [any RedisArgument]) { encoder.encode(args) }
    /// Commands added so far.
    public var count: Int { encoder.commandCount }
}
