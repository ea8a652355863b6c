import Broker
import Crypto
import ETLSupport
import Foundation
import Hummingbird
import Metadata
import NIOCore
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The request context: who is asking (set by the authentication middleware) and from where.
public struct WebContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var remoteAddress: String?
    var session: Session?
    /// The role of whoever asks (the session's user as stored now, or the token's).
    var role: MetadataStore.Role?
    /// True when the request authenticated with the API bearer token (no CSRF token needed: a
    /// browser never sends it on its own).
    var viaToken = false
    /// The fields of a POSTed form or flat JSON object (read by the authentication middleware).
    var form: [String: String] = [:]

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress?.ipAddress
    }

    /// Form and JSON bodies are small; a larger one is refused before it is read.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// A signed-in browser. The cookie carries it, signed; nothing is stored server-side except the
/// sessions ended by logout before their expiry.
struct Session: Sendable {
    let user: String
    let expires: Int
    let nonce: String
    /// The token every state-changing form and API call from this session must carry.
    let csrf: String
}

/// Issues and checks session cookies and CSRF tokens, all HMAC-SHA256 under the session key.
final class Sessions: @unchecked Sendable {
    static let cookieName = "etl_session"
    private let keyBytes: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    private let lifetime: Double
    private let lock = NSLock()
    private var revoked: [String: Int] = [:]

    init(key: [UInt8], lifetime: Double) {
        keyBytes = key
        self.lifetime = lifetime
    }

    private func mac(_ text: String) -> String {
        Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: key)))
    }

    private func csrf(nonce: String) -> String { String(mac("csrf|" + nonce).prefix(40)) }

    /// A new session for `user` and its cookie value.
    func issue(user: String, now: Date = Date()) -> (cookie: String, session: Session) {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        let nonce = Hex.encode(bytes)
        let expires = Int(now.timeIntervalSince1970 + lifetime)
        let name = Data(user.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let payload = "\(name).\(expires).\(nonce)"
        return (
            payload + "." + mac("s|" + payload),
            Session(user: user, expires: expires, nonce: nonce, csrf: csrf(nonce: nonce))
        )
    }

    /// The session a cookie value stands for, or nil when it is forged, expired or logged out.
    func verify(_ cookie: String, now: Date = Date()) -> Session? {
        let parts = cookie.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, let expires = Int(parts[1]), parts[2].count == 32 else { return nil }
        let payload = "\(parts[0]).\(parts[1]).\(parts[2])"
        guard WebConfig.same(Array(mac("s|" + payload).utf8), Array(parts[3].utf8)),
            Double(expires) > now.timeIntervalSince1970
        else { return nil }
        let isRevoked = lock.withLock { revoked[parts[2]] != nil }
        guard !isRevoked else { return nil }
        var b64 = parts[0].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64) else { return nil }
        return Session(
            user: String(decoding: data, as: UTF8.self), expires: expires, nonce: parts[2], csrf: csrf(nonce: parts[2]))
    }

    /// Logout: the cookie stops working even if a copy of it survives.
    func revoke(_ s: Session, now: Date = Date()) {
        lock.withLock {
            let t = Int(now.timeIntervalSince1970)
            revoked = revoked.filter { $0.value > t }
            revoked[s.nonce] = s.expires
        }
    }

    func checkCSRF(_ token: String?, for s: Session) -> Bool {
        guard let token else { return false }
        return WebConfig.same(Array(token.utf8), Array(s.csrf.utf8))
    }
}

/// Wrong logins per client: each one is answered only after a delay, and a client with too many
/// in the window is refused until the oldest of them leaves it.
final class LoginThrottle: @unchecked Sendable {
    private let limit: Int
    private let window: Double
    private let lock = NSLock()
    private var failures: [String: [Double]] = [:]

    init(limit: Int, window: Double) {
        self.limit = limit
        self.window = window
    }

    /// Seconds until `client` may try again, or nil when it may now.
    func blocked(_ client: String, limitFactor: Int = 1, now: Double = Date().timeIntervalSince1970) -> Double? {
        lock.withLock {
            let recent = (failures[client] ?? []).filter { $0 > now - window }
            failures[client] = recent
            guard recent.count >= limit * limitFactor, let oldest = recent.suffix(limit * limitFactor).first else {
                return nil
            }
            return max(1, (oldest + window - now).rounded(.up))
        }
    }

    func failed(_ client: String, now: Double = Date().timeIntervalSince1970) {
        lock.withLock {
            failures[client, default: []].append(now)
            if failures.count > 10_000 { failures = failures.filter { ($0.value.last ?? 0) > now - window } }
        }
    }

    func succeeded(_ client: String) { lock.withLock { failures[client] = nil } }
}
