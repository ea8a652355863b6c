/// Where and how to reach Redis: from `REDIS_URL` (`redis://:password@host:port/db`, or
/// `redis://user:password@...` for an ACL user).
///
/// `description` never contains the password.
import ETLSupport

public struct RedisConfig: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    /// Seconds to wait for a connection, and for a reply to an ordinary (non-blocking) command.
    public var commandTimeout: Double = 5
    /// Seconds a lost connection keeps trying to reconnect (with backoff) before giving up.
    public var reconnectTimeout: Double = 30

    public init(
        host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil,
        database: Int = 0
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    public init(url: String, variable: String = "REDIS_URL") throws {
        let shown = URLParts.redacted(url)
        guard let parts = URLParts(url) else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' is not a URL",
                fix: "set \(variable)=redis://:PASSWORD@HOST:6379/0")
        }
        if parts.scheme == "rediss" {
            throw ConfigError(
                variable: variable, problem: "TLS (rediss://) is not supported by this build",
                fix: "use redis:// on a trusted network, or a TLS tunnel such as stunnel")
        }
        guard parts.scheme == "redis" else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' is not a redis:// URL",
                fix: "set \(variable)=redis://:PASSWORD@HOST:6379/0")
        }
        guard !parts.host.isEmpty else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' names no host",
                fix: "write it as redis://:PASSWORD@HOST:PORT/DB")
        }
        var db = 0
        let path = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        if !path.isEmpty {
            guard let n = Int(path), (0...15).contains(n) else {
                throw ConfigError(
                    variable: variable, problem: "database '\(path)' is not a number from 0 to 15",
                    fix: "end the URL with /0 (or another database number)")
            }
            db = n
        }
        let user = parts.user.flatMap { $0.isEmpty ? nil : $0 }
        self.init(host: parts.host, port: parts.port ?? 6379, username: user, password: parts.password, database: db)
        if !parts.query.isEmpty {
            throw ConfigError(
                variable: variable, problem: "URL options ('?\(parts.query[0].0)=...') are not understood",
                fix: "drop the part after '?'; set timeouts with ETL_REDIS_TIMEOUT")
        }
    }

    /// Reads `REDIS_URL` (default `redis://127.0.0.1:6379/0`), `ETL_REDIS_TIMEOUT` and
    /// `ETL_REDIS_RECONNECT_TIMEOUT`. A URL without a password takes `ETL_REDIS_PASSWORD` when set,
    /// so that docker-compose.yaml can name the host while the password stays in local.env.
    public init(environment env: Environment) throws {
        try self.init(url: env["REDIS_URL"] ?? "redis://127.0.0.1:6379/0")
        if password == nil, let p = env["ETL_REDIS_PASSWORD"], !p.isEmpty { password = p }
        commandTimeout = try env.seconds("ETL_REDIS_TIMEOUT", default: commandTimeout, range: 0.05...600)
        reconnectTimeout = try env.seconds("ETL_REDIS_RECONNECT_TIMEOUT", default: reconnectTimeout, range: 0...3600)
    }

    /// `host:port/db`, with no password.
    public var description: String { "\(host):\(port)/\(database)" }
}
