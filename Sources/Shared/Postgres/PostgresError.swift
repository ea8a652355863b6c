/// An error from Postgres or from this client, carrying what an operator needs: a code, the
/// server's SQLSTATE and message, and where it happened.
///
/// `description` is short and free of row data and passwords; `debugDescription` adds the
/// server's detail (which may quote values), hint, context and the SQL text (never its parameters).
import ETLSupport

public struct PostgresError: Error, CustomStringConvertible, CustomDebugStringConvertible, Sendable {
    /// What kind of failure this is. New codes may be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Sendable {
            case connectionFailed, authenticationFailed, connectionLost, server, copyFailed, decoding, misuse
        }
        let base: Base
        private init(_ base: Base) { self.base = base }
        /// The server could not be reached or refused the connection.
        public static let connectionFailed = Code(.connectionFailed)
        /// The server rejected the user name or password.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// An established connection broke (server restart, backend terminated, network).
        public static let connectionLost = Code(.connectionLost)
        /// The server reported an error for a statement (see `sqlState`).
        public static let server = Code(.server)
        /// A `COPY ... FROM STDIN` failed; `copyLine` says at which input line when the server says.
        public static let copyFailed = Code(.copyFailed)
        /// A value could not be decoded into the requested Swift type.
        public static let decoding = Code(.decoding)
        /// The client was used wrongly (for example a COPY statement given to `query`).
        public static let misuse = Code(.misuse)
        public var description: String { base.rawValue }
    }

    public let code: Code
    /// The five-character SQLSTATE (`23505` for a unique violation), when the server gave one.
    public let sqlState: String?
    /// The server's (or this client's) primary message.
    public let message: String
    public let detail: String?
    public let hint: String?
    /// The server's context line; for COPY it names the input line (`COPY t, line 3, column x`).
    public let context: String?
    /// The 1-based input line a failed COPY stopped at.
    public let copyLine: Int?
    /// The SQL text involved, never its parameter values.
    public let query: String?
    /// `user@host:port/db` of the connection, never the password.
    public let endpoint: String

    public init(
        code: Code, message: String, endpoint: String, sqlState: String? = nil, detail: String? = nil,
        hint: String? = nil, context: String? = nil, copyLine: Int? = nil, query: String? = nil
    ) {
        self.code = code
        self.message = message
        self.endpoint = endpoint
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.context = context
        self.copyLine = copyLine
        self.query = query
    }

    public var description: String {
        var s = "Postgres \(endpoint): "
        if let sqlState { s += "[\(sqlState)] " }
        s += message
        if let copyLine { s += " (COPY input line \(copyLine))" }
        switch code {
        case .authenticationFailed:
            s += ". Fix: check the user and password in DATABASE_URL (or POSTGRES_USER / POSTGRES_PASSWORD)"
        case .connectionFailed:
            s += ". Fix: check that Postgres runs and DATABASE_URL (or POSTGRES_HOST / POSTGRES_PORT) points at it"
        case .connectionLost: s += ". Fix: check that Postgres still runs; the next call reconnects"
        case .server where sqlState == "42P01" || sqlState == "3F000":
            // Undefined table or schema: every program creates its schemas when it starts, so the
            // usual cause is a program started with other schema settings, or a schema dropped since.
            s +=
                ". Fix: if it is one of the project's tables, run `etlctl migrate` with the same ETL_SCHEMA and"
                + " ETL_DATALAKE_SCHEMA / ETL_LOADS_SCHEMA / ETL_DATAMART_SCHEMA settings as this program"
        default: break
        }
        return s
    }

    public var debugDescription: String {
        var parts = [description]
        if let detail { parts.append("detail: \(detail)") }
        if let hint { parts.append("hint: \(hint)") }
        if let context { parts.append("context: \(context)") }
        if let query { parts.append("query: \(query.count > 500 ? String(query.prefix(500)) + "..." : query)") }
        return parts.joined(separator: "\n  ")
    }

    /// True for failures that a new connection may cure (the caller can retry the whole unit of work).
    public var isConnectionProblem: Bool { code == .connectionLost || code == .connectionFailed }

    /// A lock wait ended by `lock_timeout` (SQLSTATE 55P03): worth trying again later.
    public var isLockTimeout: Bool { sqlState == "55P03" }

    /// The message's first line, for one-line logs.
    public var firstLine: String { String(message.split(separator: "\n", maxSplits: 1).first ?? "") }
}
