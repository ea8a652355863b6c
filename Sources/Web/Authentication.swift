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
    let backend: Backend
    static let open: Set<String> = ["/login", "/healthz"]

    /// The role a request needs: admin for the users' page and API, operator for every other
    /// state-changing request (but logout), viewer (any signed-in user or the token) for reading.
    static func required(method: HTTPRequest.Method, path: String) -> MetadataStore.Role {
        if path == "/users" || path.hasPrefix("/users/") || path == "/api/users" || path.hasPrefix("/api/users/") {
            return .admin
        }
        if method != .get && method != .head && path != "/logout" { return .operator }
        return .viewer
    }

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
            context.role = config.tokenRole
        } else if let cookie = request.cookies[Sessions.cookieName]?.value, let s = sessions.verify(cookie),
            // A user removed since the login is signed out; a changed role applies at once.
            let role = try await backend.role(of: s.user)
        {
            context.session = s
            context.role = role
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
        let needed = Self.required(method: request.method, path: path)
        if let role = context.role, role < needed {
            let who = context.viaToken ? "the API token" : "user \(context.session?.user ?? "?")"
            let message =
                "\(who) is a \(role.rawValue); this needs the \(needed.rawValue) role or above. Fix: an admin runs "
                + (context.viaToken
                    ? "the webserver with ETL_WEB_API_TOKEN_ROLE=\(needed.rawValue)"
                    : "etlctl users set-role \(context.session?.user ?? "NAME") \(needed.rawValue)")
            context.logger.warning("refused: \(message)", metadata: ["path": "\(path)"])
            return machine
                ? WebApp.jsonError(message, status: .forbidden)
                : WebApp.html(Pages.error(message, session: context.session), status: .forbidden)
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
