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

/// The README's main command, end to end on small data: scripts/run with the test build.
@Suite("The main job (scripts/run)", .serialized, .timeLimit(.minutes(20)))
struct MainJobTests {
    @Test("scripts/run completes on small data and writes the three reports")
    func mainJob() throws {
        let tag = "mj_" + TestServices.randomSuffix()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-\(tag)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var e = TestServices.environment.values
        for (k, v) in [
            "ETL_BIN_DIR": Cluster.binDir.path, "ETL_SCHEMA": tag, "ETL_REDIS_PREFIX": "\(tag):",
            "ETL_DATALAKE_SCHEMA": "\(tag)_dl", "ETL_LOADS_SCHEMA": "\(tag)_ld", "ETL_DATAMART_SCHEMA": "\(tag)_dm",
            "ETL_REPORTS_DIR": dir.appendingPathComponent("reports").path,
            "ETL_WEBLOG_DIR": dir.appendingPathComponent("logs").path,
            // The default daily schedule: unpausing makes the scheduler start the latest interval's runs,
            // which the script must join rather than run beside.
            "ETL_GENERATED_DIR": dir.appendingPathComponent("generated").path,
            "ETL_WEBLOG_LINES": "5000", "ETL_ORDERS": "5", "ETL_WEB_PORT": "0",
            "ETL_WEB_USER": "admin", "ETL_WEB_PASSWORD": "main job password",
        ] { e[k] = v }
        e["DATABASE_URL"] = nil
        e["REDIS_URL"] = nil
        e["ETL_SECRET_KEY"] = nil  // the script loads the servers' env file
        defer {
            if let pg = try? PostgresConnection(config: PostgresConfig(environment: TestServices.environment)) {
                for s in [tag, "\(tag)_dl", "\(tag)_ld", "\(tag)_dm"] {
                    _ = try? pg.execute(script: "DROP SCHEMA IF EXISTS \(s) CASCADE")
                }
            }
            try? FileManager.default.removeItem(at: dir)
        }
        let script = TestServices.repoRoot.appendingPathComponent("scripts/run").path
        let out = try TestServices.run(script, ["--workers", "2"], environment: e, timeout: 900)
        #expect(out.status == 0, "scripts/run failed:\n\(out.stdout.suffix(3000))\n\(out.stderr.suffix(3000))")
        for dag in ["b2b", "ip2geo", "weblog", "monthly-sales", "popular-devices", "popular-products"] {
            #expect(
                out.stdout.split(separator: "\n").contains { $0.hasPrefix(dag + " ") && $0.contains("success") },
                "\(dag) not successful in:\n\(out.stdout)")
        }
        // The reports agree with the independent recomputation, for the three reports.
        let checked = out.stdout.split(separator: "\n").filter { $0.contains(" ok (") }
        #expect(checked.count == 3 && !out.stdout.contains("DIFF"), "\(out.stdout.suffix(3000))")
        // Started on a port the system picked (no race for a port chosen in advance), and said which.
        let shown = out.stderr.range(of: "web UI: http://127.0.0.1:").map {
            out.stderr[$0.upperBound...].prefix { $0.isNumber }
        }
        #expect((shown.flatMap { Int($0) } ?? 0) > 0, "the web UI did not start:\n\(out.stderr.suffix(2000))")
        // The date it covered: the latest complete interval, as it says.
        let said = out.stderr.range(
            of: #"for \d{4}-\d{2}-\d{2} \(one run per DAG and date\)"#, options: .regularExpression)
        let day = try #require(
            said.map { String(out.stderr[$0].dropFirst(4).prefix(10)) }, "\(out.stderr.suffix(2000))")
        #expect(out.stdout.contains("DAG runs for \(day):"))
        let yesterday = String(PostgresTimestamp.format(Date().addingTimeInterval(-86_400)).prefix(10))
        let dayBefore = String(PostgresTimestamp.format(Date().addingTimeInterval(-2 * 86_400)).prefix(10))
        #expect(day == yesterday || day == dayBefore, "covered \(day), not the latest complete day")
        // Each DAG ran once for that date (the scheduler's run and the script's are one), and no two runs
        // of a DAG were active at once.
        let pg = try PostgresConnection(config: PostgresConfig(environment: TestServices.environment))
        let runs = try pg.query(
            "SELECT dag_id, logical_date::date::text FROM \(tag).dag_run ORDER BY dag_id, run_id"
        ).rows
        let perDAG = Dictionary(grouping: runs, by: { (try? $0.decode(String.self, 0)) ?? "" })
        for (dag, rs) in perDAG {
            #expect(
                rs.count == 1, "\(dag) ran \(rs.count) times: \(rs.map { (try? $0.decode(String.self, 1)) ?? "?" })")
        }
        #expect(perDAG.count == 6)
        for report in ["monthly-sales", "popular-devices", "popular-products"] {
            let path = dir.appendingPathComponent("reports/\(report)/date=\(day)/report.csv").path
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            #expect(text.split(separator: "\n").count >= 2, "\(report): \(path) has \(text)")
        }
    }
}
