import Foundation

/// The pieces of a `scheme://user:password@host:port/path?query` URL, percent-decoded.
struct URLParts {
    var scheme: String
    var user: String?
    var password: String?
    var host: String
    var port: Int?
    var path: String
    var query: [(String, String)]

    /// Parses `text`, or returns nil when it is not such a URL.
    init?(_ text: String) {
        guard let comps = URLComponents(string: text), let scheme = comps.scheme else { return nil }
        self.scheme = scheme.lowercased()
        user = comps.user.map { $0.removingPercentEncoding ?? $0 }
        password = comps.password.map { $0.removingPercentEncoding ?? $0 }
        host = comps.host ?? ""
        port = comps.port
        path = comps.path.removingPercentEncoding ?? comps.path
        query = (comps.queryItems ?? []).map { ($0.name, $0.value ?? "") }
    }

    /// `text` with any password replaced by `***`, fit to show in an error.
    static func redacted(_ text: String) -> String {
        guard var comps = URLComponents(string: text) else {
            // Not parseable: hide everything between "://" and "@" to be safe.
            if let at = text.lastIndex(of: "@"), let s = text.range(of: "://"), s.upperBound < at {
                return String(text[..<s.upperBound]) + "***" + String(text[at...])
            }
            return text.contains("@") ? "(hidden: it may contain a password)" : text
        }
        if comps.password != nil { comps.password = "***" }
        return comps.string ?? "(hidden)"
    }
}
