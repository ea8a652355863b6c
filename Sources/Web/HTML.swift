import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// Markup that is safe by construction: text interpolated into it is escaped; only other `HTML`
/// values go in raw. A page is built from these and never from concatenated strings.
struct HTML: ExpressibleByStringInterpolation, Sendable {
    private(set) var text: String

    init(raw: String) { text = raw }
    init(stringLiteral value: String) { text = value }
    init(stringInterpolation: Interpolation) { text = stringInterpolation.text }

    struct Interpolation: StringInterpolationProtocol {
        var text = ""
        init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + 16 * interpolationCount)
        }
        mutating func appendLiteral(_ literal: String) { text += literal }
        mutating func appendInterpolation(_ s: String) { text += HTML.escape(s) }
        mutating func appendInterpolation(_ s: String?) { text += HTML.escape(s ?? "") }
        mutating func appendInterpolation(_ s: Substring) { text += HTML.escape(String(s)) }
        mutating func appendInterpolation(_ h: HTML) { text += h.text }
        mutating func appendInterpolation(_ parts: [HTML]) { for p in parts { text += p.text } }
        mutating func appendInterpolation<N: BinaryInteger>(_ n: N) { text += String(n) }
        mutating func appendInterpolation(_ d: Double) { text += String(format: "%.2f", d) }
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A path or query component, percent-encoded.
    static func component(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    static func time(_ d: Date?) -> String { d.map { String(PostgresTimestamp.format($0).prefix(19)) } ?? "–" }

    static func duration(_ a: Date?, _ b: Date?) -> String {
        guard let a else { return "–" }
        let s = (b ?? Date()).timeIntervalSince(a)
        if s < 1 { return String(format: "%.0f ms", s * 1000) }
        if s < 120 { return String(format: "%.1f s", s) }
        return String(format: "%.0f min", s / 60)
    }
}

/// The frame around every page: navigation, the signed-in user and the logout form.
enum Layout {
    static let style = """
        *{box-sizing:border-box}\
        body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#f6f7f9}
        header{background:#1d2b45;color:#fff;display:flex;align-items:center;gap:18px;padding:8px 18px}
        header a{color:#dfe6f3;text-decoration:none}header a.on,header a:hover{color:#fff;text-decoration:underline}
        header .brand{font-weight:600;color:#fff;margin-right:12px}header form.inline{margin-left:auto}\
        header .muted{color:#aab6cc}
        main{padding:16px 22px;max-width:1400px}h1{font-size:20px;margin:4px 0 14px}h2{font-size:16px;margin:22px 0 8px}
        table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px}\
        th,td{padding:5px 8px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
        th{background:#eef1f5;font-weight:600;font-size:13px}\
        td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
        a{color:#1f5fbf}\
        button{font:inherit;padding:3px 10px;border:1px solid #9aa6b8;border-radius:4px;background:#fff;cursor:pointer}
        button.primary{background:#1f5fbf;color:#fff;border-color:#1f5fbf}\
        button.danger{border-color:#c0392b;color:#c0392b}
        form.inline{display:inline;margin:0}.muted{color:#6b7483}.err{color:#b3261e}.ok{color:#1e7d32}
        .sq{display:inline-block;width:14px;height:14px;margin-right:2px;border-radius:2px;vertical-align:middle}
        .tag{display:inline-block;background:#e4ebf7;border-radius:10px;padding:0 8px;margin-right:4px;font-size:12px;\
        color:#234}
        .flash{padding:8px 12px;background:#fff4d6;border:1px solid #e6c65c;margin-bottom:12px}
        .s-success{background:#2e9e47}.s-failed{background:#d64235}.s-running{background:#40a9e0}\
        .s-queued{background:#9a8be0}
        .s-scheduled{background:#c9ced6}.s-up_for_retry{background:#f0b429}.s-upstream_failed{background:#f28b30}\
        .s-cancelled{background:#8e5bd0}\
        .s-none{background:#eef0f3;border:1px dashed #c9ced6}
        pre{background:#111722;color:#dfe6f3;padding:10px;overflow:auto;max-height:480px;white-space:pre-wrap}
        .grid td{padding:2px;text-align:center}.grid td.task{text-align:left;padding:2px 8px}\
        .filters input,.filters select{font:inherit;padding:3px}
        .legend span{margin-right:12px}\
        .card{background:#fff;border:1px solid #e3e6eb;padding:10px 14px;margin-bottom:12px}
        svg text{font:12px system-ui,sans-serif}
        """

    static let sections: [(path: String, title: String)] = [
        ("/dags", "DAGs"), ("/queues", "Queues & workers"), ("/loads", "Loads"), ("/reports", "Reports"),
        ("/audit", "Audit"),
    ]

    /// `refresh`: seconds after which the browser loads the page again (a running attempt's log).
    static func page(
        _ title: String, section: String, session: Session?, flash: String? = nil, refresh: Int? = nil, _ body: HTML
    ) -> HTML {
        let nav: [HTML] = sections.map { s in
            s.path == section
                ? "<a class=\"on\" href=\"\(s.path)\">\(s.title)</a>" : "<a href=\"\(s.path)\">\(s.title)</a>"
        }
        let user: HTML =
            session.map { s in
                """
                <form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="\(s.csrf)">\
                <span class="muted">\(s.user)</span> <button>Log out</button></form>
                """
            } ?? ""
        let note: HTML = flash.map { "<div class=\"flash\">\($0)</div>" } ?? ""
        return """
            <!doctype html><html lang="en"><head>\
            <meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">\
            \(refresh.map { HTML(raw: "<meta http-equiv=\"refresh\" content=\"\($0)\">") } ?? "")
            <title>\(title) · ETL</title><style>\(HTML(raw: style))</style></head><body>
            <header><span class="brand">Swift ETL</span>\(nav)\(user)</header>
            <main><h1>\(title)</h1>\(note)\(body)</main></body></html>
            """
    }

    /// A button that POSTs to `action` with the session's CSRF token.
    static func button(
        _ label: String, action: String, session: Session, fields: [(String, String)] = [], style: String = ""
    ) -> HTML {
        let hidden: [HTML] = fields.map { "<input type=\"hidden\" name=\"\($0.0)\" value=\"\($0.1)\">" }
        return """
            <form class="inline" method="post" action="\(action)">\
            <input type="hidden" name="csrf" value="\(session.csrf)">\(hidden)\
            <button class="\(style)">\(label)</button></form>
            """
    }

    static func square(_ state: String?, title: String, href: String? = nil) -> HTML {
        let cls = "sq s-\(state ?? "none")"
        if let href { return "<a href=\"\(href)\" title=\"\(title)\"><span class=\"\(cls)\"></span></a>" }
        return "<span class=\"\(cls)\" title=\"\(title)\"></span>"
    }
}
