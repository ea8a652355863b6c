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

/// The web UI driven in headless Chromium (Debian's chromium, chromium-driver and python3-selenium)
/// against real processes: the webserver, a scheduler and a worker on the test servers.
@Suite("Web UI in a real browser", .serialized, .timeLimit(.minutes(10)))
struct BrowserTests {
    static let shots = TestServices.repoRoot.appendingPathComponent("test-output/browser")

    @Test(
        """
        headless Chromium: log in, unpause a DAG, trigger it, see it succeed, open a report; screenshots of the main \
        pages
        """
    )
    func browser() throws {
        let password = "browser test password"
        let c = try Cluster(extra: ["ETL_DAGS_ARE_PAUSED_AT_CREATION": "true"])
        let fx = try PipelineFixture()
        let pg = try #require(fx.pg)
        try pg.query(
            """
            INSERT INTO \(fx.settings.datamart).popular_devices VALUES
              ('2024-06-15', 1, 'Windows PC', 40, 900), ('2024-06-15', 2, 'iPhone', 31, 700),
              ('2024-06-15', 3, 'Samsung SM-G991B', 12, 260), ('2024-06-15', 4, 'Mac', 9, 120),
              ('2024-06-15', 5, 'iPad', 4, 41)
            """)
        try fx.write(
            "reports/popular-devices/date=2024-06-15/report.csv", "rank,device,users,requests\n1,Windows PC,40,900\n")
        var web = fx.values
        web["ETL_WEB_USER"] = "operator"
        web["ETL_WEB_PASSWORD"] = password
        let (_, port) = try c.startWebserver(extra: web)
        try c.startScheduler()
        try c.startWorker(["--concurrency", "2"])
        try Self.waitForHealth(port: port, logs: c)

        try? FileManager.default.removeItem(at: Self.shots)
        var env = TestServices.environment.values
        env["WEB_URL"] = "http://127.0.0.1:\(port)"
        env["ETL_WEB_USER"] = "operator"
        env["ETL_WEB_PASSWORD"] = password  // through the environment, never the command line
        env["DAG"] = "example_diamond"
        env["REPORT"] = "popular-devices"
        env["SHOTS"] = Self.shots.path
        let out = try TestServices.run(
            "/usr/bin/python3", [TestServices.repoRoot.appendingPathComponent("tests/browser/drive.py").path],
            environment: env)
        #expect(out.status == 0, "\(out.stdout)\n\(out.stderr)\n\(c.logs())")
        for name in [
            "01-login", "02-dags", "03-dag-graph-and-grid", "04-run", "05-attempt-log", "06-queues-workers", "07-loads",
            "08-report",
        ] {
            let size =
                (try? FileManager.default.attributesOfItem(
                    atPath: Self.shots.appendingPathComponent(name + ".png").path)[.size] as? Int) ?? 0
            #expect(size > 5_000, "screenshot \(name).png is missing or empty")
        }
        // What the browser did really happened: the DAG is unpaused and its run succeeded.
        #expect(try c.store.dagRows().first { $0.id == "example_diamond" }?.paused == false)
        #expect(try c.store.runRows(dag: "example_diamond", limit: 5).first?.state == .success)
        #expect(
            try c.effects(run: try #require(c.store.runRows(dag: "example_diamond", limit: 1).first?.id)).count == 6)
    }

    /// Waits for `/healthz` synchronously: an async wait could be starved for longer than its
    /// deadline by the blocking tests that share the few threads of Swift's cooperative pool (it
    /// was, in CI: 30 s passed between two polls).
    static func waitForHealth(port: Int, logs c: Cluster) throws {
        let end = monotonicSeconds() + 30
        repeat {
            if TestServices.httpStatus(port: port, path: "/healthz") == 200 { return }
            usleep(100_000)
        } while monotonicSeconds() < end
        throw TestSetupError(message: "the webserver did not answer on port \(port):\n\(c.logs())")
    }
}
