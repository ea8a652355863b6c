import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// One Postgres and one Redis connection, used by one request at a time.
final class Connections {
    let pg: PostgresConnection
    let store: MetadataStore
    let queue: TaskQueue

    init(pg: PostgresConnection, store: MetadataStore, queue: TaskQueue) {
        self.pg = pg
        self.store = store
        self.queue = queue
    }
}

/// The state the web server reads and changes: the same Postgres metadata and Redis queues as
/// `etlctl`, through the same blocking C clients. Calls run on their own threads (never on
/// SwiftNIO's event loops) with a connection pair taken from a small pool.
public final class Backend: @unchecked Sendable {
    public let registry: Registry
    public let schema: String
    public let settings: PipelineSettings
    let pgConfig: PostgresConfig
    let redisConfig: RedisConfig
    let keys: RedisKeys
    let workerDeadAfter: Double
    private let lock = NSLock()
    private var idle: [Connections] = []
    private let maxIdle = 8
    private let work = DispatchQueue(label: "etl.web.backend", attributes: .concurrent)
    private let logger = Logger(label: "etl.web")

    public init(environment env: Environment) throws {
        registry = try Catalog.registry(environment: env)
        schema = env["ETL_SCHEMA"] ?? "etl"
        settings = try PipelineSettings(environment: env)
        var pg = try PostgresConfig(environment: env)
        pg.reconnectTimeout = 2  // a page answers with an error rather than hang on a dead server
        pg.applicationName = "etl-web"
        pgConfig = pg
        var redis = try RedisConfig(environment: env)
        redis.reconnectTimeout = 2
        redisConfig = redis
        keys = RedisKeys(environment: env)
        workerDeadAfter = try env.seconds("ETL_WORKER_DEAD_AFTER", default: 5, range: 0.5...3600) * 2
    }

    /// Creates the metadata tables if needed and records the DAGs, as every other program does.
    public func prepare() throws {
        let c = try open()
        _ = try Migrator.run(c.pg, schema: schema, setup: registry.setup)
        try c.store.sync(dags: registry.dags)
        give(c)
    }

    private func open() throws -> Connections {
        let pg = try PostgresConnection(config: pgConfig)
        let redis = try RedisConnection(config: redisConfig)
        return Connections(pg: pg, store: MetadataStore(pg: pg, schema: schema), queue: TaskQueue(redis: redis, keys: keys))
    }

    private func take() throws -> Connections {
        if let c = lock.withLock({ idle.popLast() }) { return c }
        return try open()
    }

    private func give(_ c: Connections) {
        lock.withLock { if idle.count < maxIdle { idle.append(c) } }
    }

    /// Runs `body` with a connection pair on a backend thread. A pair whose call failed is closed
    /// rather than returned, so a broken connection never serves the next request.
    func run<T: Sendable>(_ body: @escaping @Sendable (Connections) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, Error>) in
            work.async { [self] in
                do {
                    let c = try take()
                    do {
                        let v = try body(c)
                        give(c)
                        k.resume(returning: v)
                    } catch let e as WebError {
                        give(c)  // a refusal of the request, not a fault of the connection
                        k.resume(throwing: e)
                    } catch {
                        k.resume(throwing: error)
                    }
                } catch {
                    k.resume(throwing: error)
                }
            }
        }
    }
}
