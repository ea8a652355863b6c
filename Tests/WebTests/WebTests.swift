import Broker
import ETLSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

@testable import Web

/// The web server's router in process, against the real Postgres and Redis of the test setup
/// (a schema and key prefix of its own), with the example DAGs.
final class WebFixture: @unchecked Sendable {
    static let password = "correct horse battery"
    static let token = "test-api-token-0123456789abcdef"
    let cluster: Cluster
    let pipeline: PipelineFixture
    let web: WebApp

    init(name: String = #function, extra: [String: String] = [:]) throws {
        cluster = try Cluster(name: name, extra: extra)
        pipeline = try PipelineFixture(name: name)
        var env = cluster.env.merging(pipeline.values) { _, x in x }
        env["ETL_WEB_USER"] = "admin"
        env["ETL_WEB_PASSWORD"] = Self.password
        env["ETL_WEB_API_TOKEN"] = Self.token
        env["ETL_WEB_LOGIN_DELAY"] = "0.3"
        env["ETL_WEB_LOGIN_LIMIT"] = "3"
        env.merge(extra) { _, x in x }
        let environment = Environment(env)
        let backend = try Backend(environment: environment)
        let config = try WebConfig(environment: environment)
        try backend.prepare(config: config)
        web = WebApp(backend: backend, config: config)
    }

    var store: MetadataStore { cluster.store }

    /// One attempt of `task`, as a worker would record it: queued, started by `w-test`, finished.
    func attempt(run: Int64, task: String, state: TaskState, error: String?, log: String) throws {
        let queued = try store.markQueued(run: run, tasks: [task])
        let tryNumber = try #require(queued.first?.tryNumber)
        #expect(try store.startAttempt(run: run, task: task, tryNumber: tryNumber, worker: "w-test"))
        #expect(
            try store.finishAttempt(
                run: run, task: task, tryNumber: tryNumber, state: state, error: error, retryAt: nil, log: log))
    }

    /// Runs `body` with a test client on the router (no port is opened).
    func test<T: Sendable>(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        try await web.application().test(.router, body)
    }
}

/// A logged-in browser: its session cookie and CSRF token.
struct Browser {
    let cookie: String
    let csrf: String

    static func login(
        _ client: some TestClientProtocol, user: String = "admin", password: String = WebFixture.password
    ) async throws -> Browser? {
        let r = try await client.execute(
            uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
            body: ByteBuffer(
                string: "username=\(user)&password=\(password.replacingOccurrences(of: " ", with: "+"))&next=%2Fdags"))
        guard r.status == .seeOther,
            let set = r.headers[values: .setCookie].first(where: { $0.hasPrefix("etl_session=") })
        else { return nil }
        let cookie = String(set.split(separator: ";")[0])
        let s = try await client.execute(uri: "/api/session", method: .get, headers: [.cookie: cookie])
        let csrf =
            (try JSONSerialization.jsonObject(with: Data(buffer: s.body)) as? [String: Any])?["csrf"] as? String ?? ""
        return Browser(cookie: cookie, csrf: csrf)
    }

    func get(_ client: some TestClientProtocol, _ uri: String) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .get, headers: [.cookie: cookie])
    }

    /// A form POST as the page sends it (with the CSRF token unless `csrf` is false); `api`: as a
    /// script calls the API with this session, the token in the X-CSRF-Token header.
    func post(
        _ client: some TestClientProtocol, _ uri: String, _ fields: [String: String] = [:], csrf withToken: Bool = true,
        api: Bool = false
    ) async throws -> TestResponse {
        var f = fields
        if api {
            let body = f.map { "\($0.key)=\(HTML.component($0.value))" }.joined(separator: "&")
            return try await client.execute(
                uri: uri, method: .post,
                headers: [
                    .cookie: cookie, .contentType: "application/x-www-form-urlencoded",
                    HTTPField.Name("X-CSRF-Token")!: csrf,
                ], body: ByteBuffer(string: body))
        }
        if withToken { f["csrf"] = csrf }
        let body = f.map { "\($0.key)=\(HTML.component($0.value))" }.joined(separator: "&")
        return try await client.execute(
            uri: uri, method: .post, headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
            body: ByteBuffer(string: body))
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(buffer: body)) }
}

@Suite("Web UI and API (request level)", .serialized, .timeLimit(.minutes(10)))
struct WebTests {
    static let pages = ["/dags", "/dags/example_diamond", "/queues", "/loads", "/reports", "/reports/monthly-sales"]
    static let apis = [
        "/api/dags", "/api/dags/example_diamond", "/api/queues", "/api/workers", "/api/dead-letters", "/api/loads",
        "/api/reports/monthly-sales", "/api/session", "/metrics",
    ]

    @Test("without a login every page redirects to /login and every API route answers 401; /healthz answers")
    func loginRequired() async throws {
        let fx = try WebFixture()
        try await fx.test { client in
            for p in Self.pages {
                let r = try await client.execute(uri: p, method: .get)
                #expect(r.status == .seeOther, "\(p)")
                #expect(r.headers[.location] == "/login?next=" + HTML.component(p), "\(p)")
            }
            for p in Self.apis {
                let r = try await client.execute(uri: p, method: .get)
                #expect(r.status == .unauthorized, "\(p)")
                #expect(r.text.contains("log in first"), "\(p)")
            }
            for p in ["/dags/example_diamond/pause", "/api/dags/example_diamond/pause", "/dead-letters/requeue"] {
                let r = try await client.execute(uri: p, method: .post, body: ByteBuffer(string: "all=1"))
                #expect(r.status == .seeOther || r.status == .unauthorized, "\(p)")
            }
            let wrongToken = try await client.execute(
                uri: "/api/dags", method: .get, headers: [.authorization: "Bearer not-the-token-at-all"])
            #expect(wrongToken.status == .unauthorized)
            let forged = try await client.execute(
                uri: "/api/dags", method: .get,
                headers: [.cookie: "etl_session=YWRtaW4.9999999999.00000000000000000000000000000000.deadbeef"])
            #expect(forged.status == .unauthorized)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
        // The refused POSTs changed nothing.
        #expect(try fx.store.dagRows().first { $0.id == "example_diamond" }?.paused == false)
    }

    @Test("security headers on every kind of answer: CSP without scripts, no framing, no sniffing")
    func securityHeaders() async throws {
        let fx = try WebFixture()
        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            var answers = [
                ("/login", try await client.execute(uri: "/login", method: .get)),
                ("/healthz", try await client.execute(uri: "/healthz", method: .get)),
                ("/dags (no login)", try await client.execute(uri: "/dags", method: .get)),
            ]
            for p in Self.pages + Self.apis + ["/dags/no-such-dag"] { answers.append((p, try await b.get(client, p))) }
            for (p, r) in answers {
                let csp = r.headers[.contentSecurityPolicy] ?? ""
                #expect(
                    csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'")
                        && !csp.contains("script-src"), "\(p): CSP \(csp)")
                #expect(r.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(p)")
                #expect(r.headers[.xContentTypeOptions] == "nosniff", "\(p)")
            }
        }
    }

    @Test(
        """
        a session ends at its expiry: an expired cookie, correctly signed, is refused; the Secure flag is set when \
        asked
        """
    )
    func sessionExpiryAndSecureCookie() async throws {
        let fx = try WebFixture(extra: ["ETL_WEB_SESSION_SECONDS": "120", "ETL_WEB_SECURE_COOKIES": "true"])
        try await fx.test { client in
            let r = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "username=admin&password=correct+horse+battery"))
            let set = r.headers[values: .setCookie].first { $0.hasPrefix("etl_session=") } ?? ""
            #expect(set.contains("Secure") && set.contains("HttpOnly"), "\(set)")
            // A cookie issued 121 s ago by the server's own key (as a browser keeping it would hold).
            let (old, _) = fx.web.sessions.issue(user: "admin", now: Date().addingTimeInterval(-121))
            let (fresh, _) = fx.web.sessions.issue(user: "admin", now: Date().addingTimeInterval(-100))
            let expired = try await client.execute(uri: "/dags", method: .get, headers: [.cookie: "etl_session=\(old)"])
            #expect(expired.status == .seeOther && expired.headers[.location]?.hasPrefix("/login") == true)
            #expect(
                try await client.execute(uri: "/api/dags", method: .get, headers: [.cookie: "etl_session=\(old)"])
                    .status == .unauthorized)
            #expect(
                try await client.execute(uri: "/dags", method: .get, headers: [.cookie: "etl_session=\(fresh)"]).status
                    == .ok)
        }
        let plain = try WebFixture(name: "plainCookies")
        try await plain.test { client in
            let r = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "username=admin&password=correct+horse+battery"))
            let set = r.headers[values: .setCookie].first { $0.hasPrefix("etl_session=") } ?? ""
            #expect(!set.isEmpty && !set.contains("Secure"), "\(set)")
        }
    }

    @Test(
        """
        login: a wrong password is slowed and refused, the fourth try is rate-limited; the cookie is HttpOnly and \
        SameSite; logout ends the session
        """
    )
    func login() async throws {
        let fx = try WebFixture()
        try await fx.test { client in
            let page = try await client.execute(uri: "/login", method: .get)
            #expect(page.status == .ok && page.text.contains("type=\"password\""))
            for _ in 0..<3 {
                let started = monotonicSeconds()
                #expect(try await Browser.login(client, password: "wrong password") == nil)
                #expect(monotonicSeconds() - started >= 0.3)  // slowed by ETL_WEB_LOGIN_DELAY
            }
            // The limit (3 in the window) is reached: even the right password is refused for now.
            let limited = try await client.execute(
                uri: "/login", method: .post, body: ByteBuffer(string: "username=admin&password=\(WebFixture.password)")
            )
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[.retryAfter] != nil)
            #expect(!limited.text.contains(WebFixture.password))
        }
        let other = try WebFixture(name: "login2")
        try await other.test { client in
            let r = try await client.execute(
                uri: "/login", method: .post,
                body: ByteBuffer(string: "username=admin&password=correct+horse+battery&next=%2F%2Fevil.example"))
            #expect(r.status == .seeOther)
            #expect(r.headers[.location] == "/dags")  // never off-site after a login
            // A tab between the slashes: browsers drop it, which would make "//evil.example".
            let tab = try await client.execute(
                uri: "/login", method: .post,
                body: ByteBuffer(string: "username=admin&password=correct+horse+battery&next=%2F%09%2Fevil.example"))
            #expect(tab.headers[.location] == "/dags")
            let set = r.headers[values: .setCookie].first { $0.hasPrefix("etl_session=") } ?? ""
            #expect(set.contains("HttpOnly") && set.contains("SameSite=Lax"))
            let b = try #require(try await Browser.login(client))
            #expect(try await b.get(client, "/dags").status == .ok)
            #expect(try await b.post(client, "/logout").status == .seeOther)
            // The old cookie no longer works, even if a copy of it survives.
            #expect(try await b.get(client, "/dags").status == .seeOther)
        }
    }

    @Test(
        """
        every page renders the real state: DAG list with tag filter, graph and grid, run, attempt log, queues, loads, \
        reports
        """
    )
    func pages() async throws {
        let fx = try WebFixture()
        let run = try fx.cluster.trigger("example_diamond")
        try fx.attempt(run: run, task: "extract", state: .failed, error: "boom <script>", log: "line one\nline <two>\n")
        // A load with a rejected row, and a report, in the fixture's own schemas.
        let pg = try #require(fx.pipeline.pg)
        let s = fx.pipeline.settings
        let load = try pg.query(
            """
            INSERT INTO \(s.loads).load (pipeline, source, state, rows_read, rows_loaded, rows_rejected, finished_at)
            VALUES ('b2b', 'customer.csv', 'finished', 3, 2, 1, now()) RETURNING id
            """
        ).rows[0].decode(Int64.self, 0)
        try pg.query(
            """
            INSERT INTO \(s.loads).reject (load_id, source, line_number, raw, reason)
            VALUES ($1, 'customer.csv', 7, 'x,y', 'expected 6 fields, found 2')
            """, [load])
        try pg.query(
            """
            INSERT INTO \(s.datamart).monthly_sales
            VALUES ('2024-06-15', '2024-05-01', 3, 12, 99.50), ('2024-06-15', '2024-04-01', 1, 2, 5.00)
            """
        )
        try fx.pipeline.write(
            "reports/monthly-sales/date=2024-06-15/report.csv",
            "month,orders,units,revenue\n2024-04-01,1,2,5.00\n2024-05-01,3,12,99.50\n")

        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            let list = try await b.get(client, "/dags")
            #expect(list.status == .ok && list.text.contains("example_diamond") && list.text.contains("example_chain"))
            // Its run, still running.
            #expect(
                list.text.contains("class=\"sq s-running\"") && list.text.contains("/dags/example_diamond/runs/\(run)"))
            let filtered = try await b.get(client, "/dags?q=DIAMOND")
            #expect(filtered.text.contains("example_diamond") && !filtered.text.contains(">example_chain<"))
            let byTag = try await b.get(client, "/dags?tag=no-such-tag")
            #expect(!byTag.text.contains("/dags/example_diamond\""))

            let dag = try await b.get(client, "/dags/example_diamond")
            #expect(dag.status == .ok)
            #expect(dag.text.contains("<svg") && dag.text.contains("marker-end"))  // the graph with its edges
            for task in ["extract", "clean", "enrich", "score", "join", "publish"] {
                #expect(dag.text.contains(">\(task)<"), "\(task)")
            }
            // A grid cell links to the attempt.
            #expect(dag.text.contains("/dags/example_diamond/runs/\(run)/tasks/extract"))
            #expect(dag.text.contains("Mark failed"))

            let runPage = try await b.get(client, "/dags/example_diamond/runs/\(run)")
            #expect(runPage.text.contains("boom &lt;script&gt;") && !runPage.text.contains("boom <script>"))  // escaped
            let attempt = try await b.get(client, "/dags/example_diamond/runs/\(run)/tasks/extract")
            #expect(attempt.text.contains("line &lt;two&gt;") && attempt.text.contains("w-test"))

            #expect(try await b.get(client, "/queues").text.contains("Dead letters"))
            let loads = try await b.get(client, "/loads")
            #expect(loads.text.contains("customer.csv") && loads.text.contains("/loads/\(load)"))
            #expect(try await b.get(client, "/loads/\(load)").text.contains("expected 6 fields, found 2"))

            let report = try await b.get(client, "/reports/monthly-sales")
            #expect(
                report.text.contains("99.50") && report.text.contains("<rect") && report.text.contains("2024-06-15"))
            let csv = try await b.get(client, "/reports/monthly-sales/2024-06-15/report.csv")
            #expect(csv.status == .ok && csv.text.hasPrefix("month,orders,units,revenue\n"))
            #expect(try await b.get(client, "/reports").text.contains("latest: 2024-06-15"))

            // Names that are not ours are refused with a reason, never turned into paths.
            #expect(try await b.get(client, "/reports/..%2F..%2Fetc/2024-06-15/report.csv").status == .notFound)
            #expect(try await b.get(client, "/reports/monthly-sales/..%2F..%2Fx/report.csv").status == .badRequest)
            #expect(try await b.get(client, "/dags/no_such_dag").text.contains("no DAG named"))
            #expect(try await b.get(client, "/dags/example_diamond/runs/abc").status == .badRequest)
        }
    }

    @Test(
        """
        run parameters: the DAG page lists them with a field each in the trigger form; a wrong value is refused \
        with the fix and makes no run; a right one is recorded with the run and shown on its page; the API takes \
        them too
        """)
    func triggerWithParameters() async throws {
        let fx = try WebFixture(extra: ["ETL_PIPELINE_DAGS": "true"])
        @Sendable func runs() throws -> [MetadataStore.RunRow] {
            try fx.store.runRows(dag: "popular-devices", limit: 9)
        }
        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            let page = try await b.get(client, "/dags/popular-devices").text
            #expect(page.contains("name=\"param.top\"") && page.contains("placeholder=\"5\""), "\(page)")
            let detail = try await client.execute(
                uri: "/api/dags/popular-devices", method: .get, headers: [.authorization: "Bearer \(WebFixture.token)"])
            let params = (detail.json as? [String: Any])?["params"] as? [[String: Any]]
            #expect(params?.first?["name"] as? String == "top" && params?.first?["effect"] as? String == "output")

            let wrong = try await b.post(
                client, "/dags/popular-devices/trigger", ["date": "2024-05-01", "param.top": "500"])
            #expect(wrong.status == .badRequest && wrong.text.contains("parameter top"), "\(wrong.text)")
            #expect(wrong.text.contains("Fix:"))
            let unknown = try await b.post(client, "/dags/popular-devices/trigger", ["param.nope": "1"])
            #expect(unknown.status == .badRequest && unknown.text.contains("no parameter nope"), "\(unknown.text)")
            #expect(try runs().isEmpty)

            let ok = try await b.post(
                client, "/dags/popular-devices/trigger", ["date": "2024-05-01", "param.top": "012"])
            #expect(ok.status == .seeOther)
            let run = try #require(try runs().first)
            #expect(run.params == ["top": "12"])
            let runPage = try await b.get(client, "/dags/popular-devices/runs/\(run.id)").text
            #expect(runPage.contains("Parameters: top=12"), "\(runPage)")
            // An empty field is the default.
            #expect(
                try await b.post(client, "/dags/popular-devices/trigger", ["date": "2024-05-02", "param.top": ""])
                    .status == .seeOther)
            #expect(try runs().first?.params == ["top": "5"])
            let api = try await client.execute(
                uri: "/api/dags/popular-devices/trigger?date=2024-05-03&param.top=3", method: .post,
                headers: [.authorization: "Bearer \(WebFixture.token)"])
            #expect(api.status == .ok, "\(api.text)")
            #expect(try runs().first?.params == ["top": "3"])
            let audit = try fx.store.auditRows(limit: 10).first { $0.action == "trigger" && $0.ok }
            #expect(audit?.detail.contains("top=3") == true, "\(String(describing: audit))")
        }
    }

    @Test(
        """
        a POST without the CSRF token is refused and changes nothing; with it, pause, trigger, retry, mark failed and \
        requeue change state
        """
    )
    func actions() async throws {
        let fx = try WebFixture()
        let run = try fx.cluster.trigger("example_diamond")
        try fx.attempt(run: run, task: "extract", state: .failed, error: "boom", log: "")
        try fx.store.markUpstreamFailed(run: run, tasks: ["clean", "enrich", "score", "join", "publish"])
        try fx.cluster.queue.redis.command(
            "XADD", fx.cluster.queue.keys.dead, "*", "queue", "default", "reason", "unsigned message",
            "body", "{}", "sig", "", "at", "1")
        @Sendable func paused() throws -> Bool { try fx.store.dagRows().first { $0.id == "example_chain" }!.paused }

        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            let refused = try await b.post(client, "/dags/example_chain/pause", csrf: false)
            #expect(refused.status == .forbidden && refused.text.contains("CSRF"))
            let wrong = try await client.execute(
                uri: "/dags/example_chain/pause", method: .post,
                headers: [.cookie: b.cookie, .contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "csrf=0123"))
            #expect(wrong.status == .forbidden)
            #expect(try paused() == false)

            let pause = try await b.post(client, "/dags/example_chain/pause")
            #expect(pause.status == .seeOther)
            #expect(try paused() == true)
            // The notice rides a short-lived cookie to the page the redirect leads to, once.
            let flash = try #require(pause.headers[values: .setCookie].first { $0.hasPrefix("etl_flash=") }).split(
                separator: ";")[0]
            let back = try await client.execute(uri: "/dags", method: .get, headers: [.cookie: b.cookie + "; " + flash])
            #expect(back.text.contains("Paused example_chain."))
            #expect(try await b.post(client, "/dags/example_chain/unpause").status == .seeOther)
            #expect(try paused() == false)

            #expect(try await b.post(client, "/dags/example_chain/trigger", ["date": "2024-05-01"]).status == .seeOther)
            #expect(
                try fx.store.runRows(dag: "example_chain", limit: 5).contains {
                    PostgresTimestamp.format($0.logicalDate).hasPrefix("2024-05-01")
                })
            let twice = try await b.post(client, "/dags/example_chain/trigger", ["date": "2024-05-01"])
            #expect(twice.status == .conflict && twice.text.contains("already has a run"))
            #expect(
                try await b.post(client, "/dags/example_chain/trigger", ["date": "2024-02-30"]).status == .badRequest)

            #expect(
                try await b.post(client, "/dags/example_diamond/runs/\(run)/tasks/extract/retry").status == .seeOther)
            let states = try fx.store.instances(run: run).mapValues(\.state)
            // The task and what depends on it.
            #expect(states["extract"] == .scheduled && states["publish"] == .scheduled)

            // Cancel: a button for each task not ended; a task not started is cancelled at once.
            let runPage = try await b.get(client, "/dags/example_diamond/runs/\(run)").text
            #expect(runPage.contains("/dags/example_diamond/runs/\(run)/tasks/clean/cancel"))
            let cancel = try await b.post(client, "/dags/example_diamond/runs/\(run)/tasks/clean/cancel")
            #expect(cancel.status == .seeOther)
            #expect(try fx.store.instances(run: run)["clean"]?.state == .cancelled)
            let bearer: HTTPFields = [.authorization: "Bearer \(WebFixture.token)"]
            let api = try await client.execute(
                uri: "/api/dags/example_diamond/runs/\(run)/tasks/enrich/cancel", method: .post, headers: bearer)
            #expect(api.status == .ok && (api.json as? [String: Any])?["ok"] as? Bool == true, "\(api.text)")
            #expect(try fx.store.instances(run: run)["enrich"]?.state == .cancelled)
            let again = try await client.execute(
                uri: "/api/dags/example_diamond/runs/\(run)/tasks/enrich/cancel", method: .post, headers: bearer)
            #expect((again.json as? [String: Any])?["ok"] as? Bool == false, "\(again.text)")
            #expect(again.text.contains("had ended already (cancelled)"))
            let after = try await b.get(client, "/dags/example_diamond/runs/\(run)").text
            #expect(after.contains("/dags/example_diamond/runs/\(run)/tasks/clean/retry"))
            #expect(!after.contains("/dags/example_diamond/runs/\(run)/tasks/clean/cancel"))

            #expect(try await b.post(client, "/dags/example_diamond/runs/\(run)/mark-failed").status == .seeOther)
            #expect(try fx.store.run(run)?.state == .failed)
            #expect(try fx.store.instances(run: run)["extract"]?.state == .failed)

            // Not a yes: nothing requeued.
            #expect(try await b.post(client, "/dead-letters/requeue", ["all": "0"]).status == .seeOther)
            #expect(try fx.cluster.queue.redis.command("XLEN", fx.cluster.queue.keys.dead).int == 1)
            #expect(try await b.post(client, "/dead-letters/requeue", ["all": "1"]).status == .seeOther)
            #expect(try fx.cluster.queue.redis.command("XLEN", fx.cluster.queue.keys.dead).int == 0)
            #expect(try fx.cluster.queue.redis.command("XLEN", fx.cluster.queue.keys.queue("default")).int == 1)

            // Every action above is in the audit trail: who, what, on what, from where, its outcome.
            let trail = try fx.store.auditRows(limit: 100)
            let actions = trail.map { "\($0.actor) \($0.action) \($0.target) \($0.ok)" }
            for want in [
                "web:admin login  true", "web:admin pause example_chain true", "web:admin unpause example_chain true",
                "web:admin trigger example_chain true", "web:admin trigger example_chain false",
                "web:admin retry example_diamond run \(run) task extract true",
                "web:admin cancel example_diamond run \(run) task clean true",
                "web:api-token cancel example_diamond run \(run) task enrich true",
                "web:admin mark-failed example_diamond run \(run) true", "web:admin requeue dead letters true",
            ] {
                #expect(actions.contains(want), "\(want) not in \(actions)")
            }
            #expect(trail.allSatisfy { $0.origin.hasPrefix("client ") }, "\(trail.map(\.origin))")
            #expect(trail.first { $0.action == "trigger" && !$0.ok }?.error?.contains("already has a run") == true)
            let page = try await b.get(client, "/audit").text
            #expect(page.contains("mark-failed") && page.contains("example_diamond run \(run) task clean"))
        }
    }

    @Test(
        """
        the DAG page's backfill form makes the runs with the upstream DAGs'; a report's page says when it was \
        computed and why it is out of date
        """
    )
    func backfillFormAndReportStatus() async throws {
        let fx = try WebFixture()
        let s = fx.pipeline.settings
        let pg = try #require(fx.pipeline.pg)
        // monthly-sales for 2024-06-15, computed on the 16th; February 10th re-exported and loaded on the 20th.
        try pg.query("INSERT INTO \(s.datamart).monthly_sales VALUES ('2024-06-15', '2024-02-01', 3, 4, 5.00)")
        try pg.execute(
            script:
                """
                INSERT INTO \(s.loads).report_computed VALUES ('monthly-sales', '2024-06-15', '2024-06-16 00:00+00');
                INSERT INTO \(s.loads).b2b_day (day, signature, facts_checksum, dims_checksum, orders, sales_lines,
                                                loaded_at, replaced_at)
                VALUES ('2024-02-10', 's', 'f', 'd', 1, 1, '2024-06-01 00:00+00', '2024-06-20 00:00+00')
                """)
        @Sendable func runs() throws -> [String] {
            try
                (fx.store.runRows(dag: "example_upstream", limit: 10)
                + fx.store.runRows(dag: "example_downstream", limit: 10))
                .filter { $0.type == .backfill }
                .map { "\($0.dag) \(PostgresTimestamp.format($0.logicalDate).prefix(10))" }.sorted()
        }
        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            let report = try await b.get(client, "/reports/monthly-sales?date=2024-06-15")
            #expect(report.status == .ok)
            #expect(
                report.text.contains("Out of date") && report.text.contains("b2b day 2024-02-10 loaded again")
                    && report.text.contains("--from 2024-06-15 --to 2024-06-15 --rerun all"), "\(report.text)")
            let index = try await b.get(client, "/reports")
            #expect(index.text.contains("1 date(s) out of date"))

            let page = try await b.get(client, "/dags/example_downstream")
            #expect(page.text.contains("action=\"/dags/example_downstream/backfill\""))
            #expect(
                page.text.contains("with example_upstream&#39;s runs")
                    || page.text.contains("with example_upstream's runs"))
            let form = ["from": "2024-06-01", "to": "2024-06-03", "rerun": "none"]
            #expect(
                try await b.post(client, "/dags/example_downstream/backfill", form, csrf: false).status == .forbidden)
            #expect(try runs().isEmpty)
            #expect(try await b.post(client, "/dags/example_downstream/backfill", form).status == .seeOther)
            #expect(
                try runs() == [
                    "example_downstream 2024-06-01", "example_downstream 2024-06-02", "example_downstream 2024-06-03",
                    "example_upstream 2024-06-01", "example_upstream 2024-06-02", "example_upstream 2024-06-03",
                ])
            var bad = form
            bad["rerun"] = "everything"
            #expect(try await b.post(client, "/dags/example_downstream/backfill", bad).status == .badRequest)
            bad = form
            bad["to"] = "2024-05-01"
            #expect(try await b.post(client, "/dags/example_downstream/backfill", bad).status == .badRequest)
            #expect(try runs().count == 6)
        }
    }

    @Test(
        """
        the JSON API: bearer token or session (POST with X-CSRF-Token); every listing answers JSON; /metrics is \
        Prometheus text
        """
    )
    func api() async throws {
        let fx = try WebFixture()
        let run = try fx.cluster.trigger("example_diamond")
        try fx.attempt(run: run, task: "extract", state: .success, error: nil, log: "ok")
        let bearer: HTTPFields = [.authorization: "Bearer \(WebFixture.token)"]
        try await fx.test { client in
            for p in Self.apis where p != "/metrics" {
                let r = try await client.execute(uri: p, method: .get, headers: bearer)
                #expect(r.status == .ok, "\(p)")
                #expect(r.headers[.contentType] == "application/json", "\(p)")
                #expect(r.json != nil, "\(p)")
            }
            let dags =
                try await client.execute(uri: "/api/dags?tag=example", method: .get, headers: bearer).json
                as? [[String: Any]] ?? []
            #expect(dags.contains { $0["dag"] as? String == "example_diamond" })
            let detail =
                try await client.execute(uri: "/api/dags/example_diamond", method: .get, headers: bearer).json
                as? [String: Any]
            let tasks = detail?["tasks"] as? [[String: Any]] ?? []
            #expect(
                tasks.first { $0["task"] as? String == "join" }?["upstream"] as? [String] == [
                    "clean", "enrich", "score",
                ])
            let attempts =
                try await client.execute(
                    uri: "/api/dags/example_diamond/runs/\(run)/tasks/extract/attempts", method: .get, headers: bearer
                ).json as? [[String: Any]]
            #expect(
                attempts?.first?["state"] as? String == "success" && attempts?.first?["worker"] as? String == "w-test")

            // A token POST needs no CSRF token; a session POST needs the header.
            let p = try await client.execute(uri: "/api/dags/example_chain/pause", method: .post, headers: bearer)
            #expect(p.status == .ok)
            #expect(try fx.store.dagRows().first { $0.id == "example_chain" }?.paused == true)
            let b = try #require(try await Browser.login(client))
            let noHeader = try await client.execute(
                uri: "/api/dags/example_chain/unpause", method: .post, headers: [.cookie: b.cookie])
            #expect(noHeader.status == .forbidden)
            #expect(try fx.store.dagRows().first { $0.id == "example_chain" }?.paused == true)
            let withHeader = try await client.execute(
                uri: "/api/dags/example_chain/unpause", method: .post,
                headers: [.cookie: b.cookie, HTTPField.Name("X-CSRF-Token")!: b.csrf])
            #expect(withHeader.status == .ok)
            #expect(try fx.store.dagRows().first { $0.id == "example_chain" }?.paused == false)
            let trig = try await client.execute(
                uri: "/api/dags/example_chain/trigger", method: .post,
                headers: bearer.merging([.contentType: "application/json"]),
                body: ByteBuffer(string: "{\"date\": \"2024-03-01\"}"))
            #expect((trig.json as? [String: Any])?["run"] as? Int != nil)
            let bad = try await client.execute(uri: "/api/dags/nope/trigger", method: .post, headers: bearer)
            #expect(
                bad.status == .notFound
                    && ((bad.json as? [String: Any])?["error"] as? String ?? "").contains("no DAG named 'nope'"))

            let metrics = try await client.execute(uri: "/metrics", method: .get, headers: bearer)
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains("etl_task_instances{state=\"success\"} 1"))
            #expect(metrics.text.contains("etl_queue_waiting_messages{queue=\"default\"}"))
            #expect(metrics.text.contains("etl_task_duration_seconds_count{dag=\"example_diamond\"} 1"))
            #expect(metrics.text.contains("etl_workers_alive"))
        }
    }
}

extension HTTPFields {
    func merging(_ other: HTTPFields) -> HTTPFields {
        var out = self
        for f in other { out.append(f) }
        return out
    }
}

@Suite("Web users and roles", .serialized, .timeLimit(.minutes(10)))
struct WebRoleTests {
    /// Every state-changing route, as a page's form posts it and as the API takes it.
    static func postRoutes(run: Int64) -> [String] {
        let page = [
            "/dags/example_chain/pause", "/dags/example_chain/unpause", "/dags/example_chain/trigger",
            "/dags/example_chain/backfill", "/dags/example_diamond/runs/\(run)/tasks/extract/retry",
            "/dags/example_diamond/runs/\(run)/tasks/extract/cancel", "/dags/example_diamond/runs/\(run)/clear-failed",
            "/dags/example_diamond/runs/\(run)/mark-failed", "/dead-letters/requeue",
        ]
        return page + page.map { "/api" + $0 }
    }

    @Test(
        """
        roles: a viewer reads but every POST route answers 403, an operator and an admin may act, only an admin \
        sees the users; the token has its own role; a removed user's session ends; the last admin stays; \
        etlctl users takes the password on standard input
        """)
    func everyPostRouteWithEachRole() async throws {
        let fx = try WebFixture()
        let run = try fx.cluster.trigger("example_diamond")
        #expect(try fx.store.users().map(\.name) == ["admin"], "the configured user is the first admin")
        try fx.store.addUser("vera", password: "viewer password", role: .viewer, cost: 4)
        try fx.store.addUser("otto", password: "operator password", role: .operator, cost: 4)
        let routes = Self.postRoutes(run: run)
        try await fx.test { client in
            let viewer = try #require(try await Browser.login(client, user: "vera", password: "viewer password"))
            let op = try #require(try await Browser.login(client, user: "otto", password: "operator password"))
            let admin = try #require(try await Browser.login(client))
            for route in routes {
                let fields =
                    route.hasSuffix("trigger") ? ["date": "2024-05-0\(routes.firstIndex(of: route)! % 9 + 1)"] : [:]
                let v = try await viewer.post(client, route, fields, api: route.hasPrefix("/api/"))
                #expect(v.status == .forbidden && v.text.contains("needs the operator role"), "\(route): \(v.status)")
                for (name, b) in [("operator", op), ("admin", admin)] {
                    let r = try await b.post(client, route, fields, api: route.hasPrefix("/api/"))
                    #expect(
                        r.status != .forbidden && r.status != .unauthorized, "\(name) \(route): \(r.status) \(r.text)")
                }
            }
            for path in ["/users", "/api/users"] {
                #expect(try await viewer.get(client, path).status == .forbidden)
                #expect(try await op.get(client, path).status == .forbidden)
                let a = try await admin.get(client, path)
                #expect(a.status == .ok && a.text.contains("otto"), "\(path)")
            }
            #expect(try await viewer.get(client, "/dags").status == .ok)
            // The token's role (default operator) may act, not manage users.
            let bearer: HTTPFields = [.authorization: "Bearer \(WebFixture.token)"]
            let p = try await client.execute(uri: "/api/dags/example_chain/pause", method: .post, headers: bearer)
            #expect(p.status == .ok)
            #expect(try await client.execute(uri: "/api/users", method: .get, headers: bearer).status == .forbidden)
            // A removed user is signed out at once.
            #expect(try fx.store.removeUser("otto"))
            #expect(try await op.get(client, "/dags").status == .seeOther)
        }
        #expect(throws: MetadataStore.UserError.self) { try fx.store.removeUser("admin") }
        #expect(throws: MetadataStore.UserError.self) { try fx.store.setRole("admin", .viewer) }
        #expect(try fx.store.checkLogin("vera", password: "wrong password") == nil)
        #expect(try fx.store.checkLogin("nobody", password: "viewer password") == nil)
        // etlctl users: the password on standard input, never on the command line; each change audited.
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        let env = fx.cluster.env
        let add = try TestServices.run(
            bin, ["users", "add", "carl", "--role", "operator"], environment: env, input: "carl's password\n")
        #expect(add.status == 0 && add.stdout.contains("added carl (operator)"), "\(add.stdout)\(add.stderr)")
        #expect(try fx.store.checkLogin("carl", password: "carl's password") == .operator)
        let short = try TestServices.run(bin, ["users", "add", "dora"], environment: env, input: "short\n")
        #expect(short.status == 1 && short.stderr.contains("shorter than 8"), "\(short.stderr)")
        #expect(try TestServices.run(bin, ["users", "set-role", "carl", "admin"], environment: env).status == 0)
        #expect(try fx.store.role(of: "carl") == .admin)
        let list = try TestServices.run(bin, ["users", "list", "--json"], environment: env)
        let names = (try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]])?.compactMap {
            $0["name"] as? String
        }
        #expect(names == ["admin", "carl", "vera"], "\(list.stdout)")
        #expect(try fx.store.auditRows(limit: 10).contains { $0.action == "user-set-role" && $0.target == "carl" })
        #expect(!list.stdout.contains("password") && !list.stdout.contains("$2"), "no hash is shown")
    }

    @Test("a viewer token (ETL_WEB_API_TOKEN_ROLE=viewer) reads the API and may not act")
    func viewerToken() async throws {
        let fx = try WebFixture(extra: ["ETL_WEB_API_TOKEN_ROLE": "viewer"])
        try await fx.test { client in
            let bearer: HTTPFields = [.authorization: "Bearer \(WebFixture.token)"]
            #expect(try await client.execute(uri: "/api/dags", method: .get, headers: bearer).status == .ok)
            let p = try await client.execute(uri: "/api/dags/example_chain/pause", method: .post, headers: bearer)
            #expect(p.status == .forbidden && p.text.contains("ETL_WEB_API_TOKEN_ROLE=operator"), "\(p.text)")
        }
    }
}
