import Broker
import ETLSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metadata
import NIOCore
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// Who may ask: a valid session cookie or the API bearer token; without one, a page redirects to
/// the login and the API answers 401. A POST from a session must carry its CSRF token (form field
/// `csrf`, or header `X-CSRF-Token`), else 403. The body of a POST is read here, once, into
/// `context.form`.
struct Authentication: RouterMiddleware {
    typealias Context = WebContext
    let sessions: Sessions
    let config: WebConfig
    static let open: Set<String> = ["/login", "/healthz"]

    func handle(
        _ request: Request, context: WebContext, next: (Request, WebContext) async throws -> Response
    ) async throws -> Response {
        var request = request
        var context = context
        let path = request.uri.path
        if Self.open.contains(path) {
            if path == "/login" || request.method != .post { return try await next(request, context) }
        }
        let machine = path.hasPrefix("/api/") || path == "/api" || path == "/metrics"
        if let auth = request.headers[.authorization] {
            guard auth.hasPrefix("Bearer "), config.checkAPIToken(String(auth.dropFirst(7))) else {
                return WebApp.jsonError(
                    "the bearer token is wrong. Fix: send Authorization: Bearer <ETL_WEB_API_TOKEN>",
                    status: .unauthorized)
            }
            context.viaToken = true
        } else if let cookie = request.cookies[Sessions.cookieName]?.value, let s = sessions.verify(cookie) {
            context.session = s
        } else if machine {
            var r = WebApp.jsonError(
                "log in first: send Authorization: Bearer <ETL_WEB_API_TOKEN>, or a session cookie from /login",
                status: .unauthorized)
            r.headers[.wwwAuthenticate] = "Bearer"
            return r
        } else {
            let next = request.method == .get ? path + (request.uri.query.map { "?" + $0 } ?? "") : "/dags"
            return WebApp.redirect("/login?next=" + HTML.component(next))
        }
        if request.method != .get && request.method != .head {
            context.form = Forms.parse(try await request.collectBody(upTo: context.maxUploadSize))
            if let s = context.session, !context.viaToken {
                let token = request.headers[HTTPField.Name("X-CSRF-Token")!] ?? context.form["csrf"]
                guard sessions.checkCSRF(token, for: s) else {
                    context.logger.warning("refused a POST without a valid CSRF token", metadata: ["path": "\(path)"])
                    return machine
                        ? WebApp.jsonError(
                            "missing or wrong CSRF token."
                                + " Fix: send the X-CSRF-Token header (GET /api/session gives it)",
                            status: .forbidden)
                        : WebApp.html(
                            Pages.error(
                                "This form has expired or did not come from this site (no valid CSRF token)."
                                    + " Reload the page and try again.",
                                session: s), status: .forbidden)
                }
            }
        }
        return try await next(request, context)
    }
}
