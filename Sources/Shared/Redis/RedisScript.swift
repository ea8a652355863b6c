import Crypto
import ETLSupport

/// A Lua script run by `EVALSHA`, loaded again with `EVAL` when the server answers `NOSCRIPT`
/// (after a restart or `SCRIPT FLUSH`).
public struct RedisScript: Sendable {
    public let source: String
    /// The SHA-1 of `source` in hex, as Redis names cached scripts.
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        sha1 = Hex.encode(Insecure.SHA1.hash(data: Array(source.utf8)))
    }
}
