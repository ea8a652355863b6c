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

/// Headers that keep the pages from being framed, sniffed or running any script, and
/// `Server-Timing: app;dur=<ms>` with the time the server spent on the request (bench/web reads it).
struct SecurityHeaders: RouterMiddleware {
    typealias Context = WebContext
    func handle(
        _ request: Request, context: WebContext, next: (Request, WebContext) async throws -> Response
    ) async throws -> Response {
        let started = monotonicSeconds()
        var r = try await next(request, context)
        r.headers[HTTPField.Name("Server-Timing")!] = String(
            format: "app;dur=%.2f", (monotonicSeconds() - started) * 1000)
        r.headers[.contentSecurityPolicy] = """
            default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
            frame-ancestors 'none'; base-uri 'none'
            """
        r.headers[.xContentTypeOptions] = "nosniff"
        r.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        r.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return r
    }
}
