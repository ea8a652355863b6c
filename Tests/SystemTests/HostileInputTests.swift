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

@testable import Tasks

/// Hostile input end to end: each kind gets its clear error and nothing else is lost (issue 7).
@Suite("Hostile input", .serialized, .timeLimit(.minutes(10)))
struct HostileInputTests {
    @Test(
        """
        an access log of garbage: binary bytes, NULs, truncated lines, a 5 MB line, bad IPs and dates; each rejected \
        with its line, the good lines loaded
        """
    )
    func hostileLog() throws {
        let fx = try PipelineFixture()
        let good =
            """
            10.0.0.1 - ana [10/Jun/2024:10:00:00 +0000] \"GET /products/1 HTTP/1.1\" 200 10 \"-\" \"Mozilla/5.0 (X11; \
            Linux x86_64)\"
            """
        var rng = SystemRandomNumberGenerator()
        let garbage = Data((0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }.map { $0 == 10 ? 0 : $0 })
        var file = Data()
        let lines: [(Data, String?)] = [
            (Data(good.utf8), nil),  // 1
            (garbage, ""),  // 2 binary
            (
                Data("10.0.0.1 - ana [10/Jun/2024:10:00:00 +0000] \"GET /\u{0}x HTTP/1.1\" 200 1 \"-\" \"-\"".utf8),
                "a NUL byte at byte"
            ),  // 3 a NUL inside a field
            (Data(good.prefix(40).utf8), ""),  // 4 truncated
            (Data(String(repeating: "A", count: 5 * 1024 * 1024).utf8), "line too long"),  // 5 five megabytes
            (Data(good.replacingOccurrences(of: "10.0.0.1", with: "300.1.2.3").utf8), "bad client IP"),  // 6
            (Data(good.replacingOccurrences(of: "10/Jun/2024:10", with: "31/Feb/2024:10").utf8), "bad timestamp"),  // 7
            (Data(good.replacingOccurrences(of: "10/Jun/2024:10", with: "10/Jun/2024:99").utf8), "bad timestamp"),  // 8
            (Data("'; DROP TABLE weblogs; --".utf8), ""),  // 9
            (Data(good.utf8), nil),  // 10
        ]
        for (bytes, _) in lines {
            file.append(bytes)
            file.append(10)
        }
        let dir = fx.dir.appendingPathComponent("apache-logs")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try file.write(to: dir.appendingPathComponent("access_log_20240611T000000.log"))
        let pg = try #require(fx.pg)
        _ = try WeblogLoad.register(pg: pg, settings: fx.settings, runID: 1, logicalDate: "2024-06-15", log: { _ in })
        let r = try WeblogLoad.loadPart(
            pg: pg, settings: fx.settings, owner: "run 1/load_part_0", checkDeadline: {}, log: { _ in })
        let s = fx.settings
        let rejects = try pg.query("SELECT line_number, reason FROM \(s.loads).reject ORDER BY line_number").rows.map {
            (try $0.decode(Int64.self, 0), try $0.decode(String.self, 1))
        }
        let loaded = try pg.query("SELECT line_number FROM \(s.datalake).weblogs ORDER BY 1").rows.map {
            try $0.decode(Int64.self, 0)
        }
        // Every line is accounted for, once: loaded or rejected, never both, never neither.
        #expect(r.read == Int64(lines.count))
        #expect(r.loaded + r.rejected == r.read)
        #expect(Set(loaded).isDisjoint(with: rejects.map(\.0)) && loaded.count + rejects.count == lines.count)
        for (i, (_, reason)) in lines.enumerated() {
            let n = Int64(i + 1)
            if let reason {
                let got = rejects.first { $0.0 == n }
                #expect(got != nil, "line \(n) should be rejected")
                if !reason.isEmpty { #expect(got?.1.contains(reason) == true, "line \(n): \(got?.1 ?? "-")") }
            }
        }
        #expect(loaded.contains(1) && loaded.contains(10))
        // The table is still there.
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs") == Int64(loaded.count))
        #expect(
            try pg.query("SELECT max(length(raw)) FROM \(s.loads).reject").rows[0].decode(Int.self, 0) <= Rejection
                .rawLimit + 1)  // raw text kept short (and an ellipsis)
    }

    @Test("b2b CSVs: a missing file and an empty file stop the load naming the file; the previous data stays whole")
    func missingAndEmptyCSV() throws {
        let fx = try PipelineFixture(ownB2B: true)
        _ = try HandWorkedB2B.write(fx)
        let meta = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        defer { meta.close() }
        _ = try B2BLoad.load(pg: meta, settings: fx.settings, runID: 1, upTo: Day("2024-06-15")!, log: { _ in })
        let before = try fx.count("SELECT count(*) FROM \(fx.settings.datalake).customer")
        #expect(before > 0)
        let customers = fx.dir.appendingPathComponent("b2b/customer.csv")
        let saved = try Data(contentsOf: customers)

        try FileManager.default.removeItem(at: customers)
        let missing = #expect(throws: (any Error).self) {
            try B2BLoad.load(pg: meta, settings: fx.settings, runID: 2, upTo: Day("2024-06-15")!, log: { _ in })
        }
        #expect(missing.map { "\($0)" }?.contains("customer.csv") == true, "\(String(describing: missing))")

        try Data().write(to: customers)
        let empty = #expect(throws: (any Error).self) {
            try B2BLoad.load(pg: meta, settings: fx.settings, runID: 3, upTo: Day("2024-06-15")!, log: { _ in })
        }
        #expect(empty.map { "\($0)" }?.contains("customer.csv") == true, "\(String(describing: empty))")
        #expect(try fx.count("SELECT count(*) FROM \(fx.settings.datalake).customer") == before)
        // The broken loads are recorded as broken, with the reason.
        let broke = try fx.count(
            "SELECT count(*) FROM \(fx.settings.loads).load WHERE state = 'broken' AND error LIKE '%customer.csv%'")
        #expect(broke >= 1)
        try saved.write(to: customers)
    }

    @Test("a replayed task message (its attempt finished already) is acknowledged without running again")
    func replayedMessage() throws {
        let c = try Cluster()
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run, timeout: 40) == .success, "\(c.logs())")
        #expect(try c.effects(run: run).count == 6)
        // Replay every task's message as the scheduler sent it: same run, task and try.
        let codec = try MessageCodec(secret: c.env["ETL_SECRET_KEY"]!)
        for (task, instance) in try c.store.instances(run: run) {
            try c.queue.enqueue(
                TaskMessage(
                    dag: "example_diamond", runID: run, task: task, logicalDate: "2024-06-01",
                    tryNumber: instance.tryNumber, queue: "default", timeoutSeconds: 0), codec: codec)
        }
        let end = monotonicSeconds() + 20
        while monotonicSeconds() < end, try c.queue.redis.command("XLEN", c.queue.keys.queue("default")).int ?? 0 > 0 {
            usleep(50_000)
        }
        // All taken and acknowledged.
        #expect(try c.queue.redis.command("XLEN", c.queue.keys.queue("default")).int == 0)
        #expect(try c.effects(run: run).count == 6)  // none ran again
        #expect(try c.queue.redis.command("XLEN", c.queue.keys.dead).int == 0)  // valid, just stale: not poison
    }

    @Test("etlctl with SQL fragments and over-long values: refused with the reason, nothing changed")
    func hostileCLI() throws {
        let c = try Cluster()
        var e = c.env
        e["ETL_ENV_FILE"] = "/dev/null"
        let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path
        let drop = try TestServices.run(
            etlctl, ["dags", "trigger", "b2b'; DROP TABLE \(c.schema).dag_run; --"], environment: e)
        #expect(drop.status != 0 && drop.stderr.contains("no DAG named"))
        let long = try TestServices.run(
            etlctl, ["tasks", "retry", "example_diamond", String(repeating: "t", count: 100_000)], environment: e)
        #expect(long.status != 0 && long.stderr.contains("has no task"))
        #expect(long.stderr.count < 2000)  // the value is shown cut, not echoed whole
        let date = try TestServices.run(
            etlctl, ["dags", "trigger", "example_diamond", "--date", "2024-01-01' OR '1'='1"], environment: e)
        #expect(date.status != 0 && date.stderr.contains("YYYY-MM-DD"))
        let id = try TestServices.run(etlctl, ["loads", "rejects", "1; DROP TABLE x"], environment: e)
        #expect(id.status != 0)
        #expect(try c.store.runRows(dag: nil, limit: 10).isEmpty)
        #expect(try c.store.pg.query("SELECT count(*) FROM \(c.schema).dag_run").rows[0].decode(Int.self, 0) == 0)
    }
}

/// The security promises (issue 7): passwords required, least privilege, no secret shown anywhere.
@Suite("Security", .serialized, .timeLimit(.minutes(10)))
struct SecurityTests {
    @Test("Redis refuses a client without the password; the Postgres role is not a superuser")
    func credentialsRequired() throws {
        var config = try RedisConfig(environment: TestServices.environment)
        config.password = nil
        config.reconnectTimeout = 0
        let error = #expect(throws: RedisError.self) { _ = try RedisConnection(config: config).command("PING") }
        #expect(error.map { "\($0)" }?.contains("requires a password") == true, "\(String(describing: error))")
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        #expect(
            try pg.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").rows[0].decode(Bool.self, 0)
                == false)
        #expect(try pg.query("SELECT current_user").rows[0].decode(String.self, 0) != "postgres")
    }

    @Test("no secret in the logs, the process lists, etlctl's output or the web pages")
    func noSecretShown() async throws {
        let secret = "sekret-key-" + TestServices.randomSuffix() + "-0123456789"
        let webPassword = "web-password-" + TestServices.randomSuffix()
        let c = try Cluster(extra: ["ETL_SECRET_KEY": secret, "ETL_LOG_LEVEL": "debug"])
        var web = ["ETL_WEB_USER": "admin", "ETL_WEB_PASSWORD": webPassword]
        web["ETL_WEB_API_TOKEN"] = "api-token-" + TestServices.randomSuffix() + "-abcdef"
        let (webserver, port) = try c.startWebserver(extra: web)
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_diamond")
        #expect(try c.wait(run: run, timeout: 40) == .success)
        let secrets = [secret, webPassword, web["ETL_WEB_API_TOKEN"]!, c.pgPassword, c.redisPassword].compactMap { $0 }
            .filter { !$0.isEmpty }
        // Process lists: the command lines of everything we started.
        for p in c.workers + c.schedulers + [webserver] {
            let cmdline = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/cmdline", encoding: .utf8)) ?? ""
            for s in secrets { #expect(!cmdline.contains(s), "a secret in the command line of \(p.processIdentifier)") }
        }
        // etlctl's output, including an error about a wrong password.
        var e = c.env
        e["ETL_ENV_FILE"] = "/dev/null"
        let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path
        var outputs = [
            try TestServices.run(etlctl, ["queues"], environment: e),
            try TestServices.run(etlctl, ["workers", "--json"], environment: e),
        ]
        var wrong = e
        wrong["DATABASE_URL"] = (e["DATABASE_URL"] ?? "").replacingOccurrences(
            of: c.pgPassword ?? "#", with: "not-the-password")
        let refused = try TestServices.run(etlctl, ["dags", "list"], environment: wrong)
        // The wrong password really was tried and refused, with a reason that names the cause.
        #expect(refused.status != 0 && refused.stderr.contains("password"), "\(refused.status) \(refused.stderr)")
        outputs.append(refused)
        #expect(outputs[0].status == 0 && outputs[1].status == 0, "\(outputs.map(\.stderr))")
        for o in outputs { for s in secrets { #expect(!(o.stdout + o.stderr).contains(s)) } }
        // The web pages (logged in) and the logs of every process.
        for _ in 0..<100 where TestServices.httpStatus(port: port, path: "/healthz") != 200 { usleep(100_000) }
        let pages = try TestServices.run(
            "/usr/bin/python3",
            [
                "-c",
                """
                import os, urllib.request, urllib.parse, http.cookiejar
                base = "http://127.0.0.1:%s" % os.environ["PORT"]
                o = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
                o.open(base + "/login",
                       urllib.parse.urlencode({"username": "admin", "password": os.environ["PW"]}).encode())
                for p in ["/dags", "/dags/example_diamond", "/dags/example_diamond/runs/%s" % os.environ["RUN"],
                          "/queues", "/loads", "/reports", "/api/dags", "/api/queues"]:
                    print(o.open(base + p).read().decode())
                """,
            ], environment: ["PORT": String(port), "PW": webPassword, "RUN": String(run), "NO_PROXY": "127.0.0.1"])
        #expect(pages.status == 0 && pages.stdout.contains("example_diamond"), "\(pages.stderr)")
        for s in secrets { #expect(!pages.stdout.contains(s), "a secret in a web page") }
        c.stopAll()
        let logs = c.logs(whole: true)
        #expect(logs.contains("worker started") && logs.contains("listening on"))
        for s in secrets { #expect(!logs.contains(s), "a secret in the logs") }
    }
}

extension Cluster {
    var pgPassword: String? { try? PostgresConfig(environment: Environment(env)).password }
    var redisPassword: String? { try? RedisConfig(environment: Environment(env)).password }
}
