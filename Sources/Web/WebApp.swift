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

/// The web UI and its JSON API on one router.
///
/// - Pages are server-rendered HTML with no script. Every state change is a POST carrying the
///   session's CSRF token, answered with a redirect back (and a one-time notice).
/// - `/api/...` returns JSON for everything the pages show and do; it accepts the browser session
///   (POSTs then need the `X-CSRF-Token` header) or `Authorization: Bearer $ETL_WEB_API_TOKEN`.
/// - `/metrics` is Prometheus text, with the same authentication as the API.
/// - `/healthz` answers without authentication (for container health checks) and reveals nothing.
public struct WebApp: Sendable {
    public let backend: Backend
    public let config: WebConfig
    public let metrics: WebMetrics
    let sessions: Sessions
    let throttle: LoginThrottle

    public init(backend: Backend, config: WebConfig, metrics: WebMetrics = WebMetrics()) {
        self.backend = backend
        self.config = config
        self.metrics = metrics
        sessions = Sessions(key: config.sessionKey, lifetime: config.sessionSeconds)
        throttle = LoginThrottle(limit: config.loginLimit, window: config.loginWindow)
    }

    /// The server. Once it listens it logs `listening on http://HOST:PORT/` with the port it really
    /// bound and writes that port to `ETL_WEB_PORT_FILE` when set (with `ETL_WEB_PORT=0` the system
    /// picks a free port).
    public func application(logger: Logger = Logger(label: "etl.web")) -> some ApplicationProtocol {
        let host = config.host
        let user = config.user
        let portFile = config.portFile
        return Application(
            router: router(), configuration: .init(address: .hostname(config.host, port: config.port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("web UI listening on http://\(host):\(port)/ (user \(user))")
                if let portFile {
                    // Written whole under another name, then renamed: a reader never sees half a number.
                    let tmp = portFile + ".tmp"
                    FileManager.default.createFile(atPath: tmp, contents: Data("\(port)\n".utf8))
                    _ = rename(tmp, portFile)
                }
            }, logger: logger)
    }

    public func router() -> Router<WebContext> {
        let router = Router(context: WebContext.self)
        router.add(middleware: SecurityHeaders())
        router.add(middleware: Authentication(sessions: sessions, config: config, backend: backend))
        addAuthRoutes(router)
        addPages(router)
        addAPI(router)
        return router
    }

    // MARK: Responses

    static func html(_ h: HTML, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: h.text)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONEncoder.operatorJSON().encode(value)) ?? Data("null".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func jsonError(_ message: String, status: HTTPResponse.Status) -> Response {
        json(["error": message], status: status)
    }

    static func redirect(_ to: String, flash: String? = nil) -> Response {
        var r = Response(status: .seeOther, headers: [.location: to])
        if let flash {
            r.setCookie(
                Cookie(
                    name: "etl_flash", value: HTML.component(String(flash.prefix(300))), maxAge: 60, path: "/",
                    httpOnly: true, sameSite: .lax))
        }
        return r
    }

    /// Turns a refusal or a backend failure into a page (or JSON) that says what went wrong and
    /// what to do; server errors are logged (their messages never hold secrets).
    static func failure(_ error: any Error, api: Bool, session: Session?, logger: Logger) -> Response {
        let status: HTTPResponse.Status
        let message: String
        switch error {
        case let e as WebError:
            status = e.status
            message = e.message
        case let e as OperatorError:
            status = e.kind == .notFound ? .notFound : e.kind == .conflict ? .conflict : .badRequest
            message = e.message
        // A server that cannot be reached is 503 (try again later); any other database error is
        // 500. Both errors' descriptions carry their own cause and fix.
        case let e as PostgresError:
            status = e.isConnectionProblem ? .serviceUnavailable : .internalServerError
            message = "\(e)"
        case let e as RedisError:
            status = e.isConnectionProblem ? .serviceUnavailable : .internalServerError
            message = "\(e)"
        case let e as HTTPError:
            status = e.status
            message = e.body ?? "\(e.status)"
        default:
            status = .internalServerError
            message = "\(error)"
        }
        if status.code >= 500 { logger.error("request failed: \(message)") }
        return api ? jsonError(message, status: status) : html(Pages.error(message, session: session), status: status)
    }

    /// A page handler: the session is there (the middleware saw to it) and failures become pages.
    func page(
        _ body: @escaping @Sendable (Request, WebContext, Session, String?) async throws -> Response
    ) -> @Sendable (Request, WebContext) async throws -> Response {
        { request, context in
            guard let session = context.session else { return Self.redirect("/login") }
            let flash = request.cookies["etl_flash"].flatMap { $0.value.removingPercentEncoding }
            do {
                var r = try await body(request, context, session, flash)
                if flash != nil {
                    r.setCookie(
                        Cookie(name: "etl_flash", value: "", maxAge: 0, path: "/", httpOnly: true, sameSite: .lax))
                }
                return r
            } catch {
                return Self.failure(error, api: false, session: session, logger: context.logger)
            }
        }
    }

    /// An action posted from a page: runs it, then goes back to `back` with a notice.
    func action(
        back: @escaping @Sendable (Request, WebContext) -> String,
        _ body: @escaping @Sendable (Request, WebContext, String) async throws -> String
    ) -> @Sendable (Request, WebContext) async throws -> Response {
        { request, context in
            let user = context.session?.user ?? "api"
            do {
                let flash = try await RequestOrigin.$client.withValue("client \(context.remoteAddress ?? "unknown")") {
                    try await body(request, context, user)
                }
                return Self.redirect(back(request, context), flash: flash)
            } catch {
                return Self.failure(error, api: false, session: context.session, logger: context.logger)
            }
        }
    }

    /// An API handler returning JSON; failures become `{"error": ...}` with the right status.
    func api<T: Encodable & Sendable>(
        _ body: @escaping @Sendable (Request, WebContext, String) async throws -> T
    ) -> @Sendable (Request, WebContext) async throws -> Response {
        { request, context in
            do {
                let value = try await RequestOrigin.$client.withValue("client \(context.remoteAddress ?? "unknown")") {
                    try await body(request, context, context.session?.user ?? "api-token")
                }
                return Self.json(value)
            } catch {
                return Self.failure(error, api: true, session: context.session, logger: context.logger)
            }
        }
    }

    // MARK: Login

    func addAuthRoutes(_ router: Router<WebContext>) {
        let config = config
        let backend = backend
        let sessions = sessions
        let throttle = throttle
        router.get("/login") { request, _ in
            Self.html(Pages.login(error: nil, next: Self.safeNext(request.uri.queryParameters.get("next"))))
        }
        router.post("/login") { request, context in
            var request = request
            let form = Forms.parse(try await request.collectBody(upTo: context.maxUploadSize))
            let user = form["username"] ?? ""
            let next = Self.safeNext(form["next"])
            // Counted per client and user, and per client alone (5 times the limit), so trying
            // many user names from one address is limited too.
            let address = context.remoteAddress ?? "unknown"
            let client = "\(address)|\(user.lowercased().prefix(64))"
            if let wait = throttle.blocked(client) ?? throttle.blocked(address, limitFactor: 5) {
                var r = Self.html(
                    Pages.login(error: "Too many wrong logins. Try again in \(Int(wait)) s.", next: next),
                    status: .tooManyRequests)
                r.headers[.retryAfter] = String(Int(wait))
                return r
            }
            let role = try? await backend.checkLogin(user, password: form["password"] ?? "")
            guard role != nil else {
                throttle.failed(client)
                throttle.failed(address)
                // Slow every wrong guess down; the right password is answered at once.
                try await Task.sleep(nanoseconds: UInt64(config.loginDelay * 1_000_000_000))
                context.logger.warning(
                    "wrong login",
                    metadata: ["user": "\(user.prefix(64))", "client": "\(context.remoteAddress ?? "unknown")"])
                await RequestOrigin.$client.withValue("client \(address)") {
                    await backend.audit(
                        actor: "web:\(user.prefix(64))", action: "login", ok: false, error: "wrong user or password")
                }
                return Self.html(Pages.login(error: "Wrong user or password.", next: next), status: .unauthorized)
            }
            throttle.succeeded(client)
            await RequestOrigin.$client.withValue("client \(address)") {
                await backend.audit(actor: "web:\(user)", action: "login", ok: true)
            }
            let (cookie, _) = sessions.issue(user: user)
            var r = Self.redirect(next)
            r.setCookie(
                Cookie(
                    name: Sessions.cookieName, value: cookie, maxAge: Int(config.sessionSeconds), path: "/",
                    secure: config.secureCookies, httpOnly: true, sameSite: .lax))
            return r
        }
        router.post("/logout") { _, context in
            if let s = context.session { sessions.revoke(s) }
            var r = Self.redirect("/login")
            r.setCookie(
                Cookie(
                    name: Sessions.cookieName, value: "", maxAge: 0, path: "/", secure: config.secureCookies,
                    httpOnly: true, sameSite: .lax))
            return r
        }
        router.get("/healthz") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        router.get("/") { _, _ in Self.redirect("/dags") }
    }

    /// Only a local path may follow a login (never another site: `//evil.example` is refused).
    static func safeNext(_ next: String?) -> String {
        // Browsers drop tabs and line breaks from a URL, so "/\t/evil.example" would become
        // "//evil.example": no control characters or spaces at all.
        guard let next, next.hasPrefix("/"), !next.hasPrefix("//"), !next.contains("\\"), next.count < 500,
            next.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f })
        else { return "/dags" }
        return next
    }

    // MARK: Pages

    func addPages(_ router: Router<WebContext>) {
        let backend = backend
        let metrics = metrics
        router.get(
            "/dags",
            use: page { request, _, session, flash in
                let tag = request.uri.queryParameters.get("tag").flatMap { $0.isEmpty ? nil : $0 }
                let search = request.uri.queryParameters.get("q").flatMap { $0.isEmpty ? nil : $0 }
                let list = try await backend.dagSummaries(tag: tag, search: search)
                let tags = Set(backend.registry.dags.flatMap(\.tags)).sorted()
                return Self.html(
                    Pages.dags(list, allTags: tags, tag: tag, search: search, session: session, flash: flash))
            })
        router.get(
            "/dags/:dag",
            use: page { _, context, session, flash in
                Self.html(
                    Pages.dag(
                        try await backend.dagDetail(try context.parameters.require("dag")), session: session,
                        flash: flash))
            })
        router.get(
            "/dags/:dag/runs/:run",
            use: page { _, context, session, flash in
                let dag = try context.parameters.require("dag")
                return Self.html(
                    Pages.run(
                        dag, try await backend.runDetail(dag: dag, run: try Self.runID(context)), session: session,
                        flash: flash))
            })
        router.get(
            "/dags/:dag/runs/:run/tasks/:task",
            use: page { _, context, session, flash in
                let dag = try context.parameters.require("dag")
                let task = try context.parameters.require("task")
                let run = try Self.runID(context)
                return Self.html(
                    Pages.attempts(
                        dag: dag, run: run, task: task, try await backend.attempts(dag: dag, run: run, task: task),
                        session: session, flash: flash))
            })
        let backToDAG: @Sendable (Request, WebContext) -> String = { request, context in
            Self.safeNext(context.form["back"] ?? "/dags/\(HTML.component(context.parameters.get("dag") ?? ""))")
        }
        router.post(
            "/dags/:dag/pause",
            use: action(back: backToList) { _, context, user in
                let dag = try context.parameters.require("dag")
                try await backend.setPaused(dag, true, by: user)
                return "Paused \(dag)."
            })
        router.post(
            "/dags/:dag/unpause",
            use: action(back: backToList) { _, context, user in
                let dag = try context.parameters.require("dag")
                try await backend.setPaused(dag, false, by: user)
                return "Unpaused \(dag)."
            })
        router.post(
            "/dags/:dag/trigger",
            use: action(back: backToDAG) { _, context, user in
                let dag = try context.parameters.require("dag")
                let date = context.form["date"].flatMap { $0.isEmpty ? nil : $0 }
                let run = try await backend.trigger(dag, date: date, params: Self.params(context.form), by: user)
                return "Triggered \(dag): run \(run)."
            })
        router.post(
            "/dags/:dag/backfill",
            use: action(back: backToDAG) { _, context, user in
                try await backend.backfill(
                    try context.parameters.require("dag"), from: context.form["from"] ?? "",
                    to: context.form["to"] ?? "", rerun: context.form["rerun"] ?? "none", by: user)
            })
        router.post(
            "/dags/:dag/runs/:run/tasks/:task/retry",
            use: action(back: backToDAG) { _, context, user in
                let dag = try context.parameters.require("dag")
                let task = try context.parameters.require("task")
                let run = try Self.runID(context)
                let n = try await backend.retry(dag: dag, run: run, task: task, by: user)
                return n == 0
                    ? "Nothing to retry: \(task) is still queued or running."
                    : "Cleared \(n) task(s) of run \(run); they run again."
            })
        router.post(
            "/dags/:dag/runs/:run/tasks/:task/cancel",
            use: action(back: backToDAG) { _, context, user in
                let (message, _) = try await backend.cancel(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context),
                    task: try context.parameters.require("task"), by: user)
                return message.prefix(1).uppercased() + message.dropFirst() + "."
            })
        router.post(
            "/dags/:dag/runs/:run/clear-failed",
            use: action(back: backToDAG) { _, context, user in
                let dag = try context.parameters.require("dag")
                let run = try Self.runID(context)
                let n = try await backend.clearFailed(dag: dag, run: run, by: user)
                return n == 0
                    ? "Run \(run) has no failed tasks." : "Cleared \(n) task(s) of run \(run); they run again."
            })
        router.post(
            "/dags/:dag/runs/:run/mark-failed",
            use: action(back: backToDAG) { _, context, user in
                let dag = try context.parameters.require("dag")
                let run = try Self.runID(context)
                return try await backend.markFailed(dag: dag, run: run, by: user)
                    ? "Marked run \(run) failed." : "Run \(run) had already ended."
            })
        router.get(
            "/queues",
            use: page { _, _, session, flash in
                Self.html(Pages.queues(try await backend.queueOverview(), session: session, flash: flash))
            })
        router.post(
            "/dead-letters/requeue",
            use: action(back: { _, _ in "/queues" }) { _, context, user in
                let ids: Set<String>? = Forms.yes(context.form["all"]) ? nil : Set([context.form["id"] ?? ""])
                return "Requeued \(try await backend.requeueDeadLetters(ids: ids, by: user)) message(s)."
            })
        router.get(
            "/users",
            use: page { _, _, session, _ in Self.html(Pages.users(try await backend.users(), session: session)) })
        router.get(
            "/audit",
            use: page { _, _, session, _ in
                Self.html(Pages.audit(try await backend.auditRows(limit: 500, action: nil), session: session))
            })
        router.get(
            "/loads",
            use: page { request, _, session, _ in
                let pipeline = request.uri.queryParameters.get("pipeline").flatMap { $0.isEmpty ? nil : $0 }
                return Self.html(
                    Pages.loads(
                        try await backend.loads(pipeline: pipeline, limit: 200), pipeline: pipeline, session: session))
            })
        router.get(
            "/loads/:load",
            use: page { _, context, session, _ in
                guard let id = context.parameters.get("load", as: Int64.self) else {
                    throw WebError.bad("a load id is a number. Fix: pick a load from /loads")
                }
                return Self.html(
                    Pages.rejects(load: id, try await backend.rejects(load: id, limit: 1000), session: session))
            })
        router.get(
            "/reports",
            use: page { _, _, session, _ in
                var all: [Backend.ReportData] = []
                for r in Reports.all { all.append(try await backend.reportData(r.name, date: nil)) }
                return Self.html(Pages.reportIndex(all, session: session))
            })
        router.get(
            "/reports/:report",
            use: page { request, context, session, _ in
                let date = request.uri.queryParameters.get("date").flatMap { $0.isEmpty ? nil : $0 }
                return Self.html(
                    Pages.report(
                        try await backend.reportData(try context.parameters.require("report"), date: date),
                        session: session))
            })
        router.get(
            "/reports/:report/:date/report.csv",
            use: page { _, context, _, _ in
                let path = try backend.reportCSV(
                    try context.parameters.require("report"), date: try context.parameters.require("date"))
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                return Response(
                    status: .ok,
                    headers: [
                        .contentType: "text/csv; charset=utf-8",
                        .contentDisposition: "attachment; filename=\"report.csv\"",
                    ],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
            })
        router.get("/metrics") { _, context in
            do {
                let text = try await metrics.scrape(backend)
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                    body: .init(byteBuffer: ByteBuffer(bytes: text)))
            } catch {
                return Self.failure(error, api: true, session: context.session, logger: context.logger)
            }
        }
    }

    private var backToList: @Sendable (Request, WebContext) -> String {
        { _, context in Self.safeNext(context.form["back"] ?? "/dags") }
    }

    /// Run parameters from a form or query: the fields `param.NAME`; an empty one is left out (the
    /// parameter's default).
    static func params(_ fields: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in fields where k.hasPrefix("param.") && !v.isEmpty { out[String(k.dropFirst(6))] = v }
        return out
    }

    static func runID(_ context: WebContext) throws -> Int64 {
        guard let run = context.parameters.get("run", as: Int64.self) else {
            throw WebError.bad("a run id is a number. Fix: pick a run from the DAG's page")
        }
        return run
    }

    // MARK: API

    func addAPI(_ router: Router<WebContext>) {
        let backend = backend
        let api = router.group("api")
        struct SessionInfo: Encodable {
            let user: String
            let csrf: String?
        }
        api.get("session", use: self.api { _, context, user in SessionInfo(user: user, csrf: context.session?.csrf) })
        api.get(
            "dags",
            use: self.api { request, _, _ in
                try await backend.dagSummaries(
                    tag: request.uri.queryParameters.get("tag"), search: request.uri.queryParameters.get("q"))
            })
        api.get(
            "dags/:dag",
            use: self.api { _, context, _ in try await backend.dagDetail(try context.parameters.require("dag")) })
        api.get(
            "dags/:dag/runs/:run",
            use: self.api { _, context, _ in
                try await backend.runDetail(dag: try context.parameters.require("dag"), run: try Self.runID(context))
            })
        api.get(
            "dags/:dag/runs/:run/tasks/:task/attempts",
            use: self.api { _, context, _ in
                try await backend.attempts(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context),
                    task: try context.parameters.require("task"))
            })
        struct Done: Encodable {
            let ok: Bool
            let message: String
            var run: Int64? = nil
            var count: Int? = nil
        }
        api.post(
            "dags/:dag/pause",
            use: self.api { _, context, user in
                try await backend.setPaused(try context.parameters.require("dag"), true, by: user)
                return Done(ok: true, message: "paused")
            })
        api.post(
            "dags/:dag/unpause",
            use: self.api { _, context, user in
                try await backend.setPaused(try context.parameters.require("dag"), false, by: user)
                return Done(ok: true, message: "unpaused")
            })
        api.post(
            "dags/:dag/trigger",
            use: self.api { request, context, user in
                let date = context.form["date"] ?? request.uri.queryParameters.get("date").map { String($0) }
                var fields: [String: String] = [:]
                for (k, v) in request.uri.queryParameters { fields[String(k)] = String(v) }
                for (k, v) in context.form { fields[k] = v }
                let run = try await backend.trigger(
                    try context.parameters.require("dag"), date: date, params: Self.params(fields), by: user)
                return Done(ok: true, message: "triggered", run: run)
            })
        api.post(
            "dags/:dag/backfill",
            use: self.api { _, context, user in
                let message = try await backend.backfill(
                    try context.parameters.require("dag"), from: context.form["from"] ?? "",
                    to: context.form["to"] ?? "", rerun: context.form["rerun"] ?? "none", by: user)
                return Done(ok: true, message: message)
            })
        api.post(
            "dags/:dag/runs/:run/tasks/:task/retry",
            use: self.api { _, context, user in
                let n = try await backend.retry(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context),
                    task: try context.parameters.require("task"), by: user)
                return Done(ok: true, message: "cleared", count: n)
            })
        api.post(
            "dags/:dag/runs/:run/tasks/:task/cancel",
            use: self.api { _, context, user in
                let (message, changed) = try await backend.cancel(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context),
                    task: try context.parameters.require("task"), by: user)
                return Done(ok: changed, message: message)
            })
        api.post(
            "dags/:dag/runs/:run/clear-failed",
            use: self.api { _, context, user in
                let n = try await backend.clearFailed(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context), by: user)
                return Done(ok: true, message: "cleared", count: n)
            })
        api.post(
            "dags/:dag/runs/:run/mark-failed",
            use: self.api { _, context, user in
                let changed = try await backend.markFailed(
                    dag: try context.parameters.require("dag"), run: try Self.runID(context), by: user)
                return Done(ok: changed, message: changed ? "marked failed" : "the run had already ended")
            })
        api.get("users", use: self.api { _, _, _ in try await backend.users() })
        api.get(
            "audit",
            use: self.api { request, _, _ in
                let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 100
                return try await backend.auditRows(
                    limit: min(max(limit, 1), 10_000),
                    action: request.uri.queryParameters.get("action").map { String($0) })
            })
        api.get("queues", use: self.api { _, _, _ in try await backend.queueOverview() })
        api.get("workers", use: self.api { _, _, _ in try await backend.workers() })
        api.get("dead-letters", use: self.api { _, _, _ in try await backend.deadLetters() })
        api.post(
            "dead-letters/requeue",
            use: self.api { _, context, user in
                let ids: Set<String>? =
                    Forms.yes(context.form["all"])
                    ? nil
                    : Set((context.form["ids"] ?? context.form["id"] ?? "").split(separator: ",").map { String($0) })
                return Done(
                    ok: true, message: "requeued", count: try await backend.requeueDeadLetters(ids: ids, by: user))
            })
        api.get(
            "loads",
            use: self.api { request, _, _ in
                let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 50
                return try await backend.loads(
                    pipeline: request.uri.queryParameters.get("pipeline").map { String($0) },
                    limit: min(max(limit, 1), 10_000))
            })
        api.get(
            "loads/:load/rejects",
            use: self.api { request, context, _ in
                guard let id = context.parameters.get("load", as: Int64.self) else {
                    throw WebError.bad("a load id is a number")
                }
                let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 100
                return try await backend.rejects(load: id, limit: min(max(limit, 1), 100_000))
            })
        api.get(
            "reports/:report",
            use: self.api { request, context, _ in
                try await backend.reportData(
                    try context.parameters.require("report"),
                    date: request.uri.queryParameters.get("date").map { String($0) })
            })
    }
}
