/// An error from Redis or from this client. `description` names the server (never the password)
/// and, where a person can act, what to do.
import ETLSupport

public struct RedisError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is. New codes may be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Sendable {
            case connectionFailed, authenticationFailed, connectionLost, timeout, server, misuse
        }
        let base: Base
        private init(_ base: Base) { self.base = base }
        /// The server could not be reached.
        public static let connectionFailed = Code(.connectionFailed)
        /// The server refused the password (or wants one and none was given).
        public static let authenticationFailed = Code(.authenticationFailed)
        /// An established connection broke; the command may or may not have run.
        public static let connectionLost = Code(.connectionLost)
        /// No reply came within the call's timeout; the connection was dropped.
        public static let timeout = Code(.timeout)
        /// The server answered with an error reply (`WRONGTYPE`, `ERR ...`).
        public static let server = Code(.server)
        /// The client was used wrongly.
        public static let misuse = Code(.misuse)
        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String
    /// `host:port/db`, never the password.
    public let endpoint: String

    public init(_ code: Code, _ message: String, endpoint: String) {
        self.code = code
        self.message = message
        self.endpoint = endpoint
    }

    public var description: String {
        var s = "Redis \(endpoint): \(message)"
        switch code {
        case .authenticationFailed:
            s += ". Fix: put the server's password in REDIS_URL as redis://:PASSWORD@HOST:PORT/DB"
        case .connectionFailed: s += ". Fix: check that redis-server runs and that REDIS_URL points at it"
        default: break
        }
        return s
    }

    /// True for failures that a new connection may cure.
    public var isConnectionProblem: Bool { code == .connectionLost || code == .connectionFailed || code == .timeout }
}
