import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// What every subcommand needs: configuration, the registry, and connections made on first use.
final class Context {
    let env: Environment
    let registry: Registry
    let schema: String

    init() throws {
        let env = try failing { try Environment.load() }
        try failing { try LoggingSetup.bootstrap(env) }
        registry = try failing { try Catalog.registry(environment: env) }
        schema = env["ETL_SCHEMA"] ?? "etl"
        self.env = env
    }

    func connectPG() throws -> PostgresConnection {
        var config = try PostgresConfig(environment: env)
        config.reconnectTimeout = 0  // an operator wants an answer now, not a retry loop
        return try PostgresConnection(config: config)
    }

    /// The metadata store, migrated (`forceSetup`: every setup script applied again, as
    /// `etlctl migrate` does to put back what was dropped by hand).
    func store(forceSetup: Bool = false) throws -> MetadataStore {
        let pg = try failing { try connectPG() }
        _ = try failing { try Migrator.run(pg, schema: schema, setup: registry.setup, force: forceSetup) }
        let store = MetadataStore(pg: pg, schema: schema)
        try failing { try store.sync(dags: registry.dags) }
        return store
    }

    func queue() throws -> TaskQueue {
        var config = try failing { try RedisConfig(environment: env) }
        config.reconnectTimeout = 0
        let redis = try failing { try RedisConnection(config: config) }
        return TaskQueue(redis: redis, keys: RedisKeys(environment: env))
    }

    /// The operator actions (shared with the web UI) on new connections, in the name of etlctl.
    func operations() -> OperatorActions {
        // Each opened at most once, and only by the actions that need it.
        final class Lazy<T>: @unchecked Sendable {
            private var value: T?
            private let make: () throws -> T
            init(_ make: @escaping () throws -> T) { self.make = make }
            func get() throws -> T {
                if let value { return value }
                let v = try make()
                value = v
                return v
            }
        }
        let store = Lazy { try self.store() }
        let queue = Lazy { try self.queue() }
        return OperatorActions(registry: registry, store: store.get, queue: queue.get, actor: "etlctl")
    }

    /// The DAG `id`, or a one-line error listing the known ones (`Registry.requireDAG`).
    func dag(_ id: String) throws -> DAG { try failing { try registry.requireDAG(id) } }

    /// The task `task` of DAG `dag`, or a one-line error listing the DAG's tasks.
    func task(_ dag: DAG, _ task: String) throws -> TaskSpec { try failing { try registry.requireTask(dag, task) } }

    /// The DAG's run for the logical date `day` (the newest, if several), if any.
    /// The date's default run (not a run of another output, `top=3`).
    func run(dag: String, on day: Day, store: MetadataStore) throws -> MetadataStore.RunRow? {
        try failing { try store.runRows(dag: dag, limit: 1000) }.first {
            PostgresTimestamp.format($0.logicalDate).hasPrefix(day.description) && $0.variant.isEmpty
        }
    }

    /// The run `id`, or the DAG's latest run (an error when it has none, for commands that act).
    func runID(dag: String, run: Int64?, store: MetadataStore) throws -> Int64 {
        guard let id = try listedRunID(dag: dag, run: run, store: store) else {
            throw fail("DAG '\(dag)' has no runs yet. Fix: etlctl dags trigger \(dag)")
        }
        return id
    }

    /// For listings: the run `id` (an error if that DAG has no such run), else the DAG's latest
    /// run, else nil: a DAG that never ran is an empty listing, not an error.
    func listedRunID(dag: String, run: Int64?, store: MetadataStore) throws -> Int64? {
        if let run {
            guard try failing({ try store.run(run) })?.dag == dag else {
                throw fail("DAG '\(dag)' has no run \(run). Fix: pick one from etlctl runs list \(dag)")
            }
            return run
        }
        return try failing({ try store.runRows(dag: dag, limit: 1) }).first?.id
    }

    /// What a listing of a DAG that never ran prints.
    static func noRuns(_ dag: String) -> String {
        "DAG '\(dag)' has no runs yet: the scheduler creates them on its schedule once it is unpaused"
            + " (etlctl dags unpause \(dag)), or run it now with etlctl dags trigger \(dag)"
    }
}

/// Prints `message` as the one-line reason and returns the exit code to throw.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("etlctl: \(message)\n".utf8))
    return ExitCode(1)
}

/// Aligned columns for a terminal; JSON for scripts.
enum Output {
    static func table(_ headers: [String], _ rows: [[String]]) {
        var widths = headers.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }
            .joined(separator: "  ")
        }
        print(line(headers))
        for r in rows { print(line(r)) }
    }

    static func json(_ value: Any) {
        let data =
            (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("null".utf8)
        print(String(decoding: data, as: UTF8.self))
    }

    /// An Encodable value as JSON (keys sorted, as `json` prints them).
    static func encoded(_ value: some Encodable) {
        let data = (try? JSONEncoder.operatorJSON().encode(value)) ?? Data("null".utf8)
        print(String(decoding: data, as: UTF8.self))
    }

    static func time(_ d: Date?) -> String { d.map { String(PostgresTimestamp.format($0).prefix(19)) } ?? "-" }
    static func duration(_ a: Date?, _ b: Date?) -> String {
        guard let a else { return "-" }
        return String(format: "%.2fs", (b ?? Date()).timeIntervalSince(a))
    }
    static func jsonTime(_ d: Date?) -> Any { d.map { PostgresTimestamp.format($0) } ?? NSNull() }
}

/// Parses `YYYY-MM-DD` (a real calendar day) as midnight UTC.
func parseDate(_ text: String) throws -> Date {
    try day(text).date
}
