import Foundation

/// The pieces of a `scheme://user:password@host:port/path?query` URL, percent-decoded.
public struct URLParts {
    public var scheme: String
    public var user: String?
    public var password: String?
    public var host: String
    public var port: Int?
    public var path: String
    public var query: [(String, String)]

    /// Parses `text`, or returns nil when it is not such a URL.
    public init?(_ text: String) {
        guard let comps = URLComponents(string: text), let scheme = comps.scheme else { return nil }
        self.scheme = scheme.lowercased()
        // Decode once, from the encoded forms (`user`/`password` are already decoded).
        user = comps.percentEncodedUser.map { $0.removingPercentEncoding ?? $0 }
        password = comps.percentEncodedPassword.map { $0.removingPercentEncoding ?? $0 }
        host = comps.host ?? ""
        port = comps.port
        path = comps.percentEncodedPath.removingPercentEncoding ?? comps.percentEncodedPath
        query = (comps.queryItems ?? []).map { ($0.name, $0.value ?? "") }
    }

    /// `text` with any password replaced by `***`, fit to show in an error.
    public static func redacted(_ text: String) -> String {
        // Whatever the parser makes of it, everything between "://" and the last "@" may be a
        // user and password: hide it all.
        if let at = text.lastIndex(of: "@") {
            if let s = text.range(of: "://"), s.upperBound <= at {
                return String(text[..<s.upperBound]) + "***" + String(text[at...])
            }
            return "(hidden: it may contain a password)"
        }
        return text
    }
}
