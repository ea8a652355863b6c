import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// Real scheduler and worker processes for one test, isolated by a Postgres schema and a Redis
/// key prefix of their own, with the example DAGs loaded and unpaused.
public final class Cluster {
    public let schema: String
    public let prefix: String
    public let env: [String: String]
    public let logDir: URL
    public let store: MetadataStore
    public let queue: TaskQueue
    public let registry: Registry
    public private(set) var workers: [Process] = []
    public private(set) var schedulers: [Process] = []
    /// Other programs started for the test (the web server).
    public private(set) var others: [Process] = []
    /// Hosts of their own for the workers and schedulers (each on its own unless a test names one),
    /// and the servers they reach; nil: every process on this host, with the test servers.
    public let lab: NetworkLab?

    public static var binDir: URL { TestServices.repoRoot.appendingPathComponent(".build/debug") }

    /// `migrate: false` leaves the database as it is (no metadata, no schemas), for tests of what
    /// the programs do on a brand-new database. `lab`: workers and schedulers on hosts of their
    /// own, against the lab's servers.
    public init(
        name: String = #function, extra: [String: String] = [:], migrate: Bool = true, lab: NetworkLab? = nil
    ) throws {
        self.lab = lab
        let tag =
            String(name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(24)) + "_"
            + TestServices.randomSuffix()
        schema = "q_" + tag
        prefix = "test:\(tag):"
        var e = lab?.environment ?? TestServices.environment.values
        e["ETL_SCHEMA"] = schema
        // The pipelines' schemas too (every program creates them at start-up): the test's own, so it
        // never reads what another test or an earlier run made.
        e["ETL_DATALAKE_SCHEMA"] = schema + "_dl"
        e["ETL_LOADS_SCHEMA"] = schema + "_ld"
        e["ETL_DATAMART_SCHEMA"] = schema + "_dm"
        e["ETL_SOURCES_DIR"] = TestServices.repoRoot.appendingPathComponent("sources").path
        e["ETL_REDIS_PREFIX"] = prefix
        e["ETL_EXAMPLE_DAGS"] = "true"
        e["ETL_PIPELINE_DAGS"] = "false"
        e["ETL_EXAMPLE_CHAIN_LENGTH"] = "20"
        e["ETL_DAGS_ARE_PAUSED_AT_CREATION"] = "false"
        e["ETL_WORKER_DEAD_AFTER"] = "2"
        e["ETL_LOG_LEVEL"] = "info"
        e["ETL_ENV_FILE"] = "/dev/null"  // not ./local.env, which users edit
        e.merge(extra) { _, x in x }
        env = e
        logDir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-cluster-\(tag)")
        try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)
        let environment = Environment(e)
        let pg = try PostgresConnection(config: PostgresConfig(environment: environment))
        registry = try Catalog.registry(environment: environment)
        store = MetadataStore(pg: pg, schema: schema)
        if migrate {
            try Migrator.run(pg, schema: schema, setup: registry.setup)
            try store.sync(dags: registry.dags)
        }
        queue = TaskQueue(
            redis: try RedisConnection(config: RedisConfig(environment: environment)), keys: RedisKeys(prefix: prefix))
        try queue.ensureGroups(queues: ["default"])
    }

    /// A cluster running the six pipelines (no example DAGs, manual runs only) on `fx`'s folders
    /// and schemas, with `extra` settings.
    /// On `fx`'s lab when it has one.
    public static func pipelines(
        _ fx: PipelineFixture, _ extra: [String: String] = [:], name: String = #function
    ) throws -> Cluster {
        var e = fx.values
        e["ETL_PIPELINE_DAGS"] = "true"
        e["ETL_EXAMPLE_DAGS"] = "false"
        e["ETL_PIPELINE_SCHEDULE"] = "none"
        e.merge(extra) { _, x in x }
        return try Cluster(name: name, extra: e, lab: fx.lab)
    }

    /// With a lab, on `host` (default: a host of its own, w0, w1, …).
    @discardableResult
    public func startWorker(
        _ args: [String] = [], name: String? = nil, extraEnv: [String: String] = [:], host: String? = nil
    ) throws -> Process {
        let n = name ?? "w\(workers.count)-\(TestServices.randomSuffix())"
        let p = try spawn(
            "worker", args, log: "worker-\(n).log", extra: extraEnv.merging(["ETL_WORKER_NAME": n]) { _, x in x },
            host: lab == nil ? nil : host ?? "w\(workers.count)")
        workers.append(p)
        return p
    }

    /// With a lab, on `host` (default: a host of its own, s0, s1, …).
    @discardableResult
    public func startScheduler(
        name: String? = nil, extraEnv: [String: String] = [:], host: String? = nil
    ) throws -> Process {
        let n = name ?? "s\(schedulers.count)"
        let p = try spawn(
            "scheduler", [], log: "scheduler-\(n).log",
            extra: extraEnv.merging(["ETL_SCHEDULER_NAME": n]) { _, x in x },
            host: lab == nil ? nil : host ?? "s\(schedulers.count)")
        schedulers.append(p)
        return p
    }

    /// Starts another of our executables with the cluster's environment plus `extra`.
    @discardableResult
    public func start(_ binary: String, _ args: [String] = [], extra: [String: String] = [:]) throws -> Process {
        let p = try spawn(binary, args, log: "\(binary)-\(others.count).log", extra: extra)
        others.append(p)
        return p
    }

    private func spawn(
        _ binary: String, _ args: [String], log: String, extra: [String: String], host: String? = nil
    ) throws -> Process {
        let path = Self.binDir.appendingPathComponent(binary).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError(
                message: "\(path) is missing: build it first (scripts/test does `swift build --build-tests`)")
        }
        let p = Process()
        if let lab, let host {
            let (program, arguments) = try lab.command(on: host, path, args)
            p.executableURL = URL(fileURLWithPath: program)
            p.arguments = arguments
        } else {
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = args
        }
        p.environment = env.merging(extra) { _, x in x }
        let logURL = logDir.appendingPathComponent(log)
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let fh = try FileHandle(forWritingTo: logURL)
        p.standardOutput = fh
        p.standardError = fh
        try p.run()
        return p
    }

    /// Creates a manual run and wakes the scheduler, as `etlctl dags trigger` does.
    public func trigger(_ dagID: String, date: Date = Date(timeIntervalSince1970: 1_717_200_000)) throws -> Int64 {
        guard let dag = registry.dag(dagID), let run = try store.createRun(dag, logicalDate: date, type: .manual) else {
            throw TestSetupError(message: "could not create a run of \(dagID)")
        }
        try queue.wakeScheduler(dag: dagID, run: run, reason: "triggered", by: "test")
        return run
    }

    /// Waits until `condition` holds; throws, naming `what`, when `timeout` seconds pass first, so a
    /// test never goes on as if the thing it waited for had happened.
    public func waitFor(_ what: String, timeout: Double = 20, _ condition: () throws -> Bool) throws {
        let end = monotonicSeconds() + timeout
        repeat {
            if try condition() { return }
            usleep(20_000)
        } while monotonicSeconds() < end
        throw TestSetupError(message: "\(what) did not happen within \(timeout) s; logs in \(logDir.path):\n\(logs())")
    }

    /// Waits until `task` of `run` is running and returns the worker running it.
    @discardableResult
    public func waitRunning(run: Int64, task: String, timeout: Double = 20) throws -> String {
        try waitFor("\(task) of run \(run) running", timeout: timeout) {
            try store.instances(run: run)[task]?.state == .running
        }
        return try store.pg.query(
            "SELECT coalesce(worker, '') FROM \(schema).task_instance WHERE run_id = $1 AND task_id = $2", [run, task]
        )
        .rows[0].decode(String.self, 0)
    }

    /// Waits for the run to end; returns its final state.
    public func wait(run: Int64, timeout: Double = 60) throws -> RunState {
        let end = monotonicSeconds() + timeout
        while monotonicSeconds() < end {
            if let r = try store.run(run), r.state.isFinished { return r.state }
            usleep(50_000)
        }
        throw TestSetupError(
            message: "run \(run) did not finish within \(timeout) s; logs in \(logDir.path):\n\(logs())")
    }

    /// Every process's log, each cut to its last 3,000 characters for a failure message, or
    /// `whole` (for tests that search the logs).
    public func logs(whole: Bool = false) -> String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: logDir.path)) ?? []
        return files.sorted().map { f in
            let text = (try? String(contentsOfFile: logDir.appendingPathComponent(f).path, encoding: .utf8)) ?? ""
            return "== \(f)\n" + (whole ? text : String(text.suffix(3000)))
        }.joined(separator: "\n")
    }

    public func effects(run: Int64) throws -> [(task: String, tryNumber: Int, at: Date)] {
        try store.pg.query(
            "SELECT task_id, try_number, at FROM \(schema).example_effect WHERE run_id = $1 ORDER BY at", [run]
        ).rows.map {
            (try $0.decode(String.self, 0), try $0.decode(Int.self, 1), try $0.decode(Date.self, 2))
        }
    }

    public func stopAll() {
        for p in workers + schedulers + others where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in workers + schedulers + others { _ = TestServices.waitForExit(p) }
    }

    /// Starts a webserver on a port the system picks (`ETL_WEB_PORT=0`) and returns it with the
    /// port it bound, read from its `ETL_WEB_PORT_FILE` (waits up to `timeout` seconds).
    public func startWebserver(extra: [String: String], timeout: Double = 30) throws -> (Process, Int) {
        let portFile = logDir.appendingPathComponent("webserver-\(others.count).port").path
        var e = extra
        e["ETL_WEB_PORT"] = "0"
        e["ETL_WEB_PORT_FILE"] = portFile
        let p = try start("webserver", extra: e)
        let end = monotonicSeconds() + timeout
        repeat {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8),
                let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return (p, port)
            }
            if !p.isRunning { break }
            usleep(50_000)
        } while monotonicSeconds() < end
        throw TestSetupError(message: "the webserver did not say where it listens within \(timeout) s:\n\(logs())")
    }

    deinit {
        stopAll()
        for s in [schema, schema + "_dl", schema + "_ld", schema + "_dm"] {
            _ = try? store.pg.execute(script: "DROP SCHEMA IF EXISTS \(s) CASCADE")
        }
        if let keys = try? queue.redis.command("KEYS", prefix + "*").array?.compactMap(\.string), !keys.isEmpty {
            _ = try? queue.redis.command(["DEL"] + keys.map { $0 as any RedisArgument })
        }
    }
}
