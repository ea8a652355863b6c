import Crypto
import ETLSupport
import Foundation
import RedisClient
import Workflow

/// Signs and checks task messages: the body is JSON, the signature is HMAC-SHA256 of the body
/// under `ETL_SECRET_KEY`, in hex. Verification is constant-time.
///
/// Every way a message can be refused has its own reason, which goes with the message into the
/// dead letters.
public struct MessageCodec: Sendable {
    /// Bodies above this many bytes are refused unread.
    public static let maxBodyBytes = 64 * 1024

    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }

    public init(secret: String) throws {
        guard secret.utf8.count >= 16 else {
            throw ConfigError(
                variable: "ETL_SECRET_KEY", problem: "the secret is shorter than 16 bytes",
                fix: "set ETL_SECRET_KEY to a long random value, e.g. the output of `openssl rand -hex 32`")
        }
        self.secret = Array(secret.utf8)
    }

    /// Reads `ETL_SECRET_KEY`.
    public init(environment env: Environment) throws {
        guard let secret = env["ETL_SECRET_KEY"] else {
            throw ConfigError(
                variable: "ETL_SECRET_KEY", problem: "it is not set; task messages and web sessions are signed with it",
                fix:
                    "set ETL_SECRET_KEY to a long random value,"
                    + " the same for the scheduler, every worker and the web server"
            )
        }
        try self.init(secret: secret)
    }

    /// The JSON body and its hex signature.
    public func encode(_ message: TaskMessage) throws -> (body: [UInt8], signature: String) {
        let body = message.json
        return (body, sign(body))
    }

    public func sign(_ body: [UInt8]) -> String {
        Hex.encode(HMAC<SHA256>.authenticationCode(for: body, using: key))
    }

    /// Checks the signature, then decodes the body.
    public func decode(body: [UInt8]?, signature: String?) throws(MessageRejection) -> TaskMessage {
        guard let body, !body.isEmpty else { throw .malformed("the message has no body") }
        guard body.count <= Self.maxBodyBytes else { throw .oversized(bytes: body.count) }
        guard let signature, !signature.isEmpty else { throw .unsigned }
        guard let mac = Hex.decode(signature), mac.count == SHA256.byteCount,
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key)
        else {
            throw .badSignature
        }
        // Signed by us, so a decode failure is a version or programming mismatch, not an attack.
        // One decode on the common path; Foundation's decoder only to explain a failure.
        if let message = TaskMessage(flat: body) { return message }
        let data = Data(body)
        let message: TaskMessage
        do {
            message = try JSONDecoder().decode(TaskMessage.self, from: data)
        } catch {
            if let probe = try? JSONDecoder().decode(VersionProbe.self, from: data),
                probe.v != TaskMessage.currentVersion
            {
                throw .unsupportedVersion(probe.v)
            }
            throw .malformed(
                "the body is not a version-\(TaskMessage.currentVersion) task message: \(Self.describe(error))")
        }
        guard message.version == TaskMessage.currentVersion else { throw .unsupportedVersion(message.version) }
        return message
    }

    private struct VersionProbe: Decodable { var v: Int }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "field '\(key.stringValue)' is missing"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx):
            return "field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type"
        case DecodingError.dataCorrupted: return "it is not valid JSON"
        default: return "\(error)"
        }
    }
}
