import Broker
import Crypto
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The web server's settings, from the same environment (and `local.env`) as every other program.
///
/// Secrets are kept only as keyed hashes: the password and API token are hashed with a key made at
/// start-up, so the plain values are dropped as soon as the configuration is read.
public struct WebConfig: Sendable {
    public var host: String
    /// `ETL_WEB_PORT` (default 8080); 0 lets the system pick a free port.
    public var port: Int
    /// `ETL_WEB_PORT_FILE`: once listening, the server writes the port it bound there (for scripts
    /// and tests that start it on port 0, so no port is taken between choosing and binding it).
    public var portFile: String?
    public let user: String
    /// The configured password, kept only to create the first admin (`Backend.prepare`).
    let initialPassword: String
    /// The role of the API bearer token (`ETL_WEB_API_TOKEN_ROLE`, default operator).
    public let tokenRole: MetadataStore.Role
    let apiTokenDigest: [UInt8]?
    /// Signs session cookies and CSRF tokens; derived from `ETL_SECRET_KEY` so it is distinct from
    /// the key that signs task messages.
    let sessionKey: [UInt8]
    private let digestKeyBytes: [UInt8]
    var digestKey: SymmetricKey { SymmetricKey(data: digestKeyBytes) }
    public var sessionSeconds: Double
    /// How long a wrong login waits before it is answered.
    public var loginDelay: Double
    /// Wrong logins from one client within `loginWindow` seconds before it is refused outright.
    public var loginLimit: Int
    public var loginWindow: Double
    /// Set the cookie's Secure flag (behind HTTPS).
    public var secureCookies: Bool

    public init(environment env: Environment) throws {
        host = env["ETL_WEB_HOST"] ?? "127.0.0.1"
        port = try env.integer("ETL_WEB_PORT", default: 8080, range: 0...65535)
        portFile = env["ETL_WEB_PORT_FILE"]
        guard let user = env["ETL_WEB_USER"] else {
            throw ConfigError(
                variable: "ETL_WEB_USER", problem: "it is not set; the web UI needs a login",
                fix: "set ETL_WEB_USER and ETL_WEB_PASSWORD (in local.env or the environment)")
        }
        guard let password = env["ETL_WEB_PASSWORD"] else {
            throw ConfigError(
                variable: "ETL_WEB_PASSWORD", problem: "it is not set; the web UI needs a login",
                fix: "set ETL_WEB_PASSWORD to a password of 8 characters or more")
        }
        guard password.count >= 8 else {
            throw ConfigError(
                variable: "ETL_WEB_PASSWORD", problem: "it is shorter than 8 characters",
                fix: "set ETL_WEB_PASSWORD to a password of 8 characters or more")
        }
        guard let secret = env["ETL_SECRET_KEY"], secret.utf8.count >= 16 else {
            throw ConfigError(
                variable: "ETL_SECRET_KEY",
                problem: "it is not set or shorter than 16 bytes; web sessions are signed with it",
                fix: "set ETL_SECRET_KEY to a long random value, e.g. the output of `openssl rand -hex 32`")
        }
        self.user = user
        digestKeyBytes = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let digestKey = SymmetricKey(data: digestKeyBytes)
        initialPassword = password
        let role = env["ETL_WEB_API_TOKEN_ROLE"] ?? "operator"
        guard let tokenRole = MetadataStore.Role(rawValue: role) else {
            throw ConfigError(
                variable: "ETL_WEB_API_TOKEN_ROLE", problem: "'\(role)' is not a role",
                fix: "use viewer, operator or admin (default operator)")
        }
        self.tokenRole = tokenRole
        if let token = env["ETL_WEB_API_TOKEN"] {
            guard token.utf8.count >= 16 else {
                throw ConfigError(
                    variable: "ETL_WEB_API_TOKEN", problem: "it is shorter than 16 characters",
                    fix: "set ETL_WEB_API_TOKEN to a long random value (`openssl rand -hex 32`),"
                        + " or unset it to allow only browser sessions"
                )
            }
            apiTokenDigest = Self.digest(token, digestKey)
        } else {
            apiTokenDigest = nil
        }
        sessionKey = Array(
            HMAC<SHA256>.authenticationCode(
                for: Array("etl web sessions v1".utf8), using: SymmetricKey(data: Array(secret.utf8))))
        sessionSeconds = try env.seconds("ETL_WEB_SESSION_SECONDS", default: 12 * 3600, range: 60...(30 * 86400))
        loginDelay = try env.seconds("ETL_WEB_LOGIN_DELAY", default: 1, range: 0...30)
        loginLimit = try env.integer("ETL_WEB_LOGIN_LIMIT", default: 10, range: 1...10_000)
        loginWindow = try env.seconds("ETL_WEB_LOGIN_WINDOW", default: 900, range: 1...86400)
        secureCookies = env["ETL_WEB_SECURE_COOKIES"]?.lowercased() == "true"
    }

    static func digest(_ s: String, _ key: SymmetricKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(s.utf8), using: key))
    }

    /// Constant time in the length of the (fixed-size) digests.
    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }

    func checkAPIToken(_ token: String) -> Bool {
        guard let apiTokenDigest else { return false }
        return Self.same(Self.digest(token, digestKey), apiTokenDigest)
    }
}
