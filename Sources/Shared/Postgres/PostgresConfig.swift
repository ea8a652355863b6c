/// Where and how to reach Postgres: from `DATABASE_URL`, else from the original project's
/// `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB`.
///
/// `description` never contains the password.
import ETLSupport

public struct PostgresConfig: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    /// libpq `sslmode` (`disable`, `prefer`, `require`, ...); nil leaves libpq's default.
    public var sslMode: String?
    /// Seconds libpq waits for a connection.
    public var connectTimeout: Int = 10
    /// Seconds a lost connection keeps trying to reconnect (with backoff) before giving up.
    public var reconnectTimeout: Double = 30
    /// Reported in `pg_stat_activity`, so an operator sees which process holds a connection.
    public var applicationName: String = "etl"
    /// Seconds after which a peer that stopped answering counts as gone (`ETL_PG_DEAD_PEER`,
    /// default 20): TCP keepalives probe an idle connection from 5 s on, and `tcp_user_timeout`
    /// ends one whose sent data stays unacknowledged this long. A frozen process's kernel still
    /// answers both: the attempt lease (MetadataStore+attempts) covers that case.
    public var deadPeer: Int = 20
    /// Session limits for the server to enforce (`lock_timeout`, `idle_in_transaction_session_timeout`:
    /// see `worker(environment:)`), as `-c name=value` options at connect.
    public var sessionLimits: [(name: String, value: String)] = []

    public init(host: String = "127.0.0.1", port: Int = 5432, user: String, password: String?, database: String) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses `postgres://user:password@host:port/db?sslmode=...` (`postgresql://` too).
    public init(url: String, variable: String = "DATABASE_URL") throws {
        let shown = URLParts.redacted(url)
        guard let parts = URLParts(url), parts.scheme == "postgres" || parts.scheme == "postgresql" else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' is not a postgres:// URL",
                fix: "set \(variable)=postgres://USER:PASSWORD@HOST:5432/DATABASE")
        }
        guard !parts.host.isEmpty else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' names no host",
                fix: "put the host after '@', e.g. @127.0.0.1:5432")
        }
        guard let user = parts.user, !user.isEmpty else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' names no user",
                fix: "write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        let db = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        guard !db.isEmpty else {
            throw ConfigError(
                variable: variable, problem: "'\(shown)' names no database", fix: "end the URL with /DATABASE")
        }
        self.init(host: parts.host, port: parts.port ?? 5432, user: user, password: parts.password, database: db)
        for (k, v) in parts.query {
            switch k {
            case "sslmode": sslMode = v
            case "connect_timeout":
                guard let t = Int(v), t > 0 else {
                    throw ConfigError(
                        variable: variable, problem: "connect_timeout=\(v) is not a positive number",
                        fix: "use e.g. ?connect_timeout=10")
                }
                connectTimeout = t
            case "application_name": applicationName = v
            default:
                throw ConfigError(
                    variable: variable, problem: "unknown URL option '\(k)'",
                    fix: "use only sslmode, connect_timeout or application_name")
            }
        }
    }

    /// Reads `DATABASE_URL`, else the `POSTGRES_*` variables. `ETL_PG_RECONNECT_TIMEOUT` sets
    /// how long a lost connection is retried.
    public init(environment env: Environment) throws {
        if let url = env["DATABASE_URL"] {
            try self.init(url: url)
        } else if let user = env["POSTGRES_USER"] {
            let port = try env.integer("POSTGRES_PORT", default: 5432, range: 1...65535)
            self.init(
                host: env["POSTGRES_HOST"] ?? "127.0.0.1", port: port, user: user,
                password: env["POSTGRES_PASSWORD"], database: env["POSTGRES_DB"] ?? user)
        } else {
            throw ConfigError(
                variable: "DATABASE_URL", problem: "neither DATABASE_URL nor POSTGRES_USER is set",
                fix: "set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DATABASE (or POSTGRES_HOST, POSTGRES_USER,"
                    + " POSTGRES_PASSWORD, POSTGRES_DB) in the environment or local.env"
            )
        }
        reconnectTimeout = try env.seconds("ETL_PG_RECONNECT_TIMEOUT", default: reconnectTimeout, range: 0...3600)
        deadPeer = try env.integer("ETL_PG_DEAD_PEER", default: deadPeer, range: 5...7200)
    }

    /// The connections a worker's tasks open: the server ends a transaction left idle for
    /// `ETL_PG_IDLE_IN_TRANSACTION_TIMEOUT` seconds (default 60; its locks go with it), and a lock
    /// wait longer than `ETL_PG_LOCK_TIMEOUT` seconds (default 10) fails with SQLSTATE 55P03, which
    /// the worker retries without counting it as the task's failure. Neither limits how long a
    /// statement may run. (The worker's slot sessions keep the lock timeout only: WorkerService.)
    public static func worker(environment env: Environment) throws -> PostgresConfig {
        var c = try PostgresConfig(environment: env)
        let idle = try env.seconds("ETL_PG_IDLE_IN_TRANSACTION_TIMEOUT", default: 60, range: 1...86_400)
        let lock = try env.seconds("ETL_PG_LOCK_TIMEOUT", default: 10, range: 0.1...86_400)
        c.sessionLimits = [
            ("idle_in_transaction_session_timeout", "\(Int(idle * 1000))"), ("lock_timeout", "\(Int(lock * 1000))"),
        ]
        return c
    }

    /// `user@host:port/database`, with no password.
    public var description: String { "\(user)@\(host):\(port)/\(database)" }

    /// libpq keyword/value pairs. The password travels only here, never in a conninfo string.
    var libpqParameters: [(String, String)] {
        var p: [(String, String)] = [
            ("host", host), ("port", String(port)), ("user", user), ("dbname", database),
            ("connect_timeout", String(connectTimeout)), ("application_name", applicationName),
            // Text results in a fixed shape whatever the server's defaults are.
            (
                "options",
                "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3"
                    + " -c client_min_messages=warning -c bytea_output=hex"
                    + sessionLimits.map { " -c \($0.name)=\($0.value)" }.joined()
            ),
            ("client_encoding", "UTF8"),
            // A dead peer (host gone, link cut) ends the connection within about `deadPeer` seconds.
            ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "5"),
            ("keepalives_count", String(max(1, (deadPeer - 5) / 5))),
            ("tcp_user_timeout", String(deadPeer * 1000)),
        ]
        if let password { p.append(("password", password)) }
        if let sslMode { p.append(("sslmode", sslMode)) }
        return p
    }
}
