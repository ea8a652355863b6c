import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

/// A brand-new database (issue 12): nothing has run, no schema exists. The real webserver is
/// started on it, then every listing page, API route and `/metrics` is opened and every listing
/// command of etlctl run: each answers 200 (exit 0) with an empty state that says what fills it,
/// and an id that does not exist answers 404 (exit 1) with a message.
@Suite("A brand-new database", .serialized, .timeLimit(.minutes(10)))
struct EmptyDatabaseTests {
    static let password = "empty database password"

    func schemaExists(_ c: Cluster, _ name: String) throws -> Bool {
        try c.store.pg.query("SELECT count(*) FROM pg_namespace WHERE nspname = $1", [name]).rows[0].decode(Int.self, 0)
            == 1
    }

    @Test("every page, API route, /metrics and etlctl listing works before anything has run")
    func everythingEmpty() throws {
        let c = try Cluster(extra: ["ETL_PIPELINE_DAGS": "true", "ETL_EXAMPLE_DAGS": "false"], migrate: false)
        let schemas = [
            c.schema, c.env["ETL_DATALAKE_SCHEMA"]!, c.env["ETL_LOADS_SCHEMA"]!, c.env["ETL_DATAMART_SCHEMA"]!,
        ]
        for s in schemas { #expect(try !schemaExists(c, s), "\(s) exists before the test started anything") }

        let (_, port) = try c.startWebserver(extra: ["ETL_WEB_USER": "admin", "ETL_WEB_PASSWORD": Self.password])
        // The webserver's start-up created the metadata and the pipelines' schemas (one migration step).
        for s in schemas { #expect(try schemaExists(c, s), "the webserver did not create schema \(s) at start-up") }

        let ok = [
            "/dags", "/dags/b2b", "/dags/monthly-sales", "/queues", "/loads", "/loads?pipeline=weblog", "/reports",
            "/reports/monthly-sales", "/reports/popular-devices", "/reports/popular-products",
            "/api/dags", "/api/dags/b2b", "/api/queues", "/api/workers", "/api/dead-letters", "/api/loads",
            "/api/loads?pipeline=b2b", "/api/reports/monthly-sales", "/api/reports/popular-devices",
            "/api/reports/popular-products", "/api/session", "/reports/monthly-sales?date=2024-06-01", "/metrics",
            "/healthz",
        ]
        let missing = [
            "/dags/no-such-dag", "/dags/b2b/runs/987654", "/dags/b2b/runs/987654/tasks/load_tables", "/loads/987654",
            "/reports/no-such-report", "/reports/monthly-sales/2024-06-01/report.csv", "/api/dags/no-such-dag",
            "/api/dags/b2b/runs/987654", "/api/dags/b2b/runs/987654/tasks/load_tables/attempts",
            "/api/loads/987654/rejects", "/api/reports/no-such-report",
        ]
        let pages = try Self.fetch(port: port, paths: ok + missing)
        for path in ok {
            let (status, body) = try #require(pages[path], "\(path) not fetched")
            #expect(status == 200, "\(path) answered \(status): \(body.prefix(500))")
            #expect(!body.contains("does not exist"), "\(path): \(body.prefix(500))")
        }
        for path in missing {
            let (status, body) = try #require(pages[path])
            #expect(status == 404, "\(path) answered \(status), not 404: \(body.prefix(300))")
            #expect(body.contains("Fix:"), "\(path) names no fix: \(body.prefix(300))")
        }
        // The empty states say what will fill them.
        let expectations = [
            "/loads": "no loads yet: the ingestion DAGs (b2b, ip2geo, weblog) record theirs here",
            "/loads?pipeline=weblog": "no loads of weblog yet",
            "/dags/b2b": "No runs yet.",
            "/queues": "No worker has reported.",
            "/reports": "no data yet: run the monthly-sales DAG",
            "/reports/popular-devices": "No data yet. Run the popular-devices DAG",
            "/api/loads": "[]",
            "/api/dead-letters": "[]",
        ]
        for (path, text) in expectations {
            #expect(
                pages[path]?.1.contains(text) == true, "\(path) lacks \"\(text)\": \(pages[path]?.1.prefix(800) ?? "")")
        }
        #expect(pages["/metrics"]?.1.contains("etl_task_instances") == true)
        #expect(pages["/loads/987654"]?.1.contains("there is no load 987654") == true)

        // etlctl's listings, on the same fresh database.
        let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path
        let listings: [([String], String)] = [
            (["dags", "list"], "b2b"), (["runs", "list"], "no runs yet"),
            (["runs", "list", "b2b"], "DAG 'b2b' has no runs yet"),
            (["tasks", "list", "b2b"], "DAG 'b2b' has no runs yet"),
            (["logs", "b2b", "load_tables"], "DAG 'b2b' has no runs yet"),
            (["queues"], "dead letters: 0"), (["workers"], "no workers have reported"),
            (["dead-letters", "list"], "no dead letters"),
            (["summary", "--date", "2024-06-01"], "no run"), (["loads", "list"], "no loads yet"),
            (["loads", "list", "--pipeline", "ip2geo"], "no loads of ip2geo yet"),
        ]
        for (args, text) in listings {
            let out = try TestServices.run(etlctl, args, environment: c.env)
            #expect(out.status == 0, "etlctl \(args.joined(separator: " ")) exited \(out.status): \(out.stderr)")
            #expect(out.stdout.contains(text), "etlctl \(args.joined(separator: " ")) printed: \(out.stdout)")
            let json = try TestServices.run(etlctl, args + ["--json"], environment: c.env)
            #expect(
                json.status == 0, "etlctl \(args.joined(separator: " ")) --json exited \(json.status): \(json.stderr)")
            #expect(
                (try? JSONSerialization.jsonObject(with: Data(json.stdout.utf8))) != nil, "not JSON: \(json.stdout)")
        }
        let noLoad = try TestServices.run(etlctl, ["loads", "rejects", "987654"], environment: c.env)
        #expect(
            noLoad.status == 1 && noLoad.stderr.contains("there is no load 987654"), "\(noLoad.status) \(noLoad.stderr)"
        )
        let noRun = try TestServices.run(etlctl, ["tasks", "list", "b2b", "--run", "987654"], environment: c.env)
        #expect(noRun.status == 1 && noRun.stderr.contains("has no run 987654"), "\(noRun.status) \(noRun.stderr)")
    }

    @Test("a missing relation or schema is reported with its cause and the fix")
    func missingRelation() throws {
        let c = try Cluster(extra: ["ETL_PIPELINE_DAGS": "true", "ETL_EXAMPLE_DAGS": "false"])
        let (_, port) = try c.startWebserver(extra: ["ETL_WEB_USER": "admin", "ETL_WEB_PASSWORD": Self.password])
        // Someone drops the loads schema under a running webserver.
        try c.store.pg.execute(script: "DROP SCHEMA \(c.env["ETL_LOADS_SCHEMA"]!) CASCADE")
        let pages = try Self.fetch(port: port, paths: ["/loads", "/api/loads"])
        for path in ["/loads", "/api/loads"] {
            let (status, body) = try #require(pages[path])
            #expect(status == 500, "\(path): \(status)")
            #expect(body.contains("does not exist") && body.contains("etlctl migrate"), "\(path): \(body.prefix(600))")
            #expect(!body.contains("scheduler has migrated"), "the old, wrong fix text: \(body.prefix(600))")
        }
        // etlctl (which migrates first) puts it back, and the page works again.
        let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path
        let migrate = try TestServices.run(etlctl, ["migrate"], environment: c.env)
        #expect(migrate.status == 0, "\(migrate.stderr)")
        #expect(try Self.fetch(port: port, paths: ["/loads"])["/loads"]?.0 == 200)
    }

    /// GETs each path as a logged-in user (urllib in a child process, over real HTTP); returns the
    /// status and body of each.
    static func fetch(port: Int, paths: [String]) throws -> [String: (Int, String)] {
        let out = try TestServices.run(
            "/usr/bin/python3",
            [
                "-c",
                """
                import json, os, sys, urllib.request, urllib.parse, urllib.error, http.cookiejar
                base = "http://127.0.0.1:%s" % os.environ["PORT"]
                o = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
                login = urllib.parse.urlencode({"username": "admin", "password": os.environ["PW"]}).encode()
                o.open(base + "/login", login)
                result = {}
                for p in json.loads(os.environ["PATHS"]):
                    try:
                        r = o.open(base + p)
                        result[p] = [r.status, r.read().decode("utf-8", "replace")]
                    except urllib.error.HTTPError as e:
                        result[p] = [e.code, e.read().decode("utf-8", "replace")]
                print(json.dumps(result))
                """,
            ],
            environment: [
                "PORT": String(port), "PW": password, "NO_PROXY": "127.0.0.1",
                "PATHS": String(decoding: try JSONSerialization.data(withJSONObject: paths), as: UTF8.self),
            ])
        guard out.status == 0,
            let parsed = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: [Any]]
        else {
            throw TestSetupError(message: "fetching pages failed: \(out.stderr)")
        }
        return parsed.mapValues { (($0[0] as? Int) ?? 0, ($0[1] as? String) ?? "") }
    }
}
