import ETLSupport
import Foundation
import PostgresClient
import TestSupport
import Testing
import Workflow

@Suite("etlctl tasks test", .serialized, .timeLimit(.minutes(5)))
struct TaskTestCommandTests {
    @Test(
        """
        etlctl tasks test runs one task in its own process with its log printed: by default into scratch \
        schemas and folders (the real datalake, exports and metadata untouched, no run recorded), with --real \
        into the real ones; a failing task exits 1 with its error and commits nothing
        """)
    func oneTaskWithoutTheScheduler() throws {
        let small = ["ETL_HISTORY_START": "2024-06-01", "ETL_ORDERS": "7"]
        let fx = try PipelineFixture(extra: small)
        let c = try Cluster.pipelines(fx, small)  // its settings and metadata; no process started
        defer { c.stopAll() }
        let s = fx.settings
        let scratch = fx.dir.appendingPathComponent("scratch").path
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        func test(_ args: String...) throws -> TestServices.Output {
            try TestServices.run(
                bin, ["tasks", "test"] + args + ["--date", "2024-06-03", "--scratch-dir", scratch], environment: c.env)
        }
        for task in ["create_tables", "generate_orders", "load_tables"] {
            let out = try test("b2b", task)
            #expect(out.status == 0, "\(task): \(out.stdout)\(out.stderr)")
            #expect(
                out.stdout.contains("=== b2b.\(task) for 2024-06-03 in this process, into scratch"), "\(out.stdout)")
            #expect(out.stdout.contains("succeeded in"), "\(out.stdout)")
        }
        let loaded = try test("b2b", "load_tables")
        #expect(loaded.stdout.contains("already loaded"), "its log is printed: \(loaded.stdout)")
        // Into the scratch schemas and folder only.
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake)_scratch.orders") == 3 * 7)
        #expect(FileManager.default.fileExists(atPath: "\(scratch)/generated/exports/day=2024-06-03"))
        #expect(!FileManager.default.fileExists(atPath: "\(s.exportDir)/day=2024-06-03"))
        // The real datalake has no orders (its table may not even exist yet).
        let realOrders = try fx.count(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'orders'", [s.datalake])
        #expect(try realOrders == 0 || fx.count("SELECT count(*) FROM \(s.datalake).orders") == 0)
        #expect(try fx.count("SELECT count(*) FROM \(c.schema).dag_run") == 0)
        #expect(try fx.count("SELECT count(*) FROM \(c.schema)_scratch.dag_run") == 0)
        // A failure: exit 1 with the task's error, and nothing of it committed.
        let early = try TestServices.run(
            bin,
            ["tasks", "test", "b2b", "load_tables", "--date", "2024-05-01", "--scratch-dir", scratch],
            environment: c.env)
        #expect(early.status == 1)
        #expect(
            early.stdout.contains("=== failed after") && early.stdout.contains("ETL_HISTORY_START"), "\(early.stdout)")
        // --real: the real ones, still without a run.
        for task in ["create_tables", "generate_orders", "load_tables"] {
            let out = try TestServices.run(
                bin, ["tasks", "test", "b2b", task, "--date", "2024-06-02", "--real"], environment: c.env)
            #expect(out.status == 0, "\(task): \(out.stdout)\(out.stderr)")
        }
        #expect(try fx.count("SELECT count(*) FROM \(s.datalake).orders") == 2 * 7)
        #expect(try fx.count("SELECT count(*) FROM \(c.schema).dag_run") == 0)
        let both = try TestServices.run(
            bin, ["tasks", "test", "b2b", "load_tables", "--real", "--fresh"], environment: c.env)
        #expect(both.status != 0 && both.stderr.contains("--fresh"), "\(both.stderr)")
    }

    @Test("a generated access log that was registered and then archived is not generated again for its date")
    func archivedLogNotRegenerated() throws {
        let small = ["ETL_HISTORY_START": "2024-06-01", "ETL_WEBLOG_LINES": "500"]
        let fx = try PipelineFixture(extra: small)
        let c = try Cluster.pipelines(fx, small)
        defer { c.stopAll() }
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        func real(_ task: String) throws -> TestServices.Output {
            let out = try TestServices.run(
                bin, ["tasks", "test", "weblog", task, "--date", "2024-06-03", "--real"], environment: c.env)
            #expect(out.status == 0, "\(task): \(out.stdout)\(out.stderr)")
            return out
        }
        for task in ["create_tables", "generate_traces", "register_files"] { _ = try real(task) }
        let path = "\(fx.settings.weblogDir)/access_log_20240604T000000.log"
        #expect(FileManager.default.fileExists(atPath: path))
        let archive = fx.dir.appendingPathComponent("archive").path
        try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: path, toPath: "\(archive)/access_log_20240604T000000.log")
        let again = try real("generate_traces")
        #expect(again.stdout.contains("was loaded already and is no longer there"), "\(again.stdout)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
