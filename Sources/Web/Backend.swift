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
    /// Where the request being served comes from (`client <address>`), for the audit trail.
    var origin = "unknown"
    let pg: PostgresConnection
    let store: MetadataStore
    let queue: TaskQueue

    func close() {
        pg.close()
        queue.redis.close()
    }

    init(pg: PostgresConnection, store: MetadataStore, queue: TaskQueue) {
        self.pg = pg
        self.store = store
        self.queue = queue
    }
}

/// The state the web server reads and changes: the same Postgres metadata and Redis queues as
/// `etlctl`, through the same blocking C clients. Calls run on their own threads (never on
/// SwiftNIO's event loops) with a connection pair taken from a pool of at most
/// `ETL_WEB_CONNECTIONS` pairs (default 16): a request beyond that waits for a pair up to 10 s,
/// then answers 503, so a burst of requests cannot open connections without bound.
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
    /// Pairs open or being opened, at most `maxConnections`.
    private let slots: DispatchSemaphore
    let maxConnections: Int
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
        maxConnections = try env.integer("ETL_WEB_CONNECTIONS", default: 16, range: 1...1000)
        slots = DispatchSemaphore(value: maxConnections)
    }

    /// Creates the metadata tables if needed and records the DAGs, as every other program does;
    /// with `config`, its user (`ETL_WEB_USER`) becomes the first admin when there is no user yet.
    public func prepare(config: WebConfig? = nil) throws {
        let c = try take()
        _ = try Migrator.run(c.pg, schema: schema, setup: registry.setup)
        try c.store.sync(dags: registry.dags)
        if let config, try c.store.addFirstAdmin(config.user, password: config.initialPassword) {
            logger.info("the configured user \(config.user) is the first admin (etlctl users manages users)")
        }
        give(c)
    }

    /// A login's role when the password is right (bcrypt, on a backend thread).
    func checkLogin(_ user: String, password: String) async throws -> MetadataStore.Role? {
        try await run { c in try c.store.checkLogin(user, password: password) }
    }

    /// A signed-in user's role now (nil: the user was removed).
    func role(of user: String) async throws -> MetadataStore.Role? {
        try await run { c in try c.store.role(of: user) }
    }

    func users() async throws -> [MetadataStore.WebUser] { try await run { c in try c.store.users() } }

    private func open() throws -> Connections {
        let pg = try PostgresConnection(config: pgConfig)
        let redis = try RedisConnection(config: redisConfig)
        return Connections(
            pg: pg, store: MetadataStore(pg: pg, schema: schema), queue: TaskQueue(redis: redis, keys: keys))
    }

    /// A pair from the pool (waiting for one when `maxConnections` are in use), or a new one.
    private func take() throws -> Connections {
        guard slots.wait(timeout: .now() + 10) == .success else {
            throw WebError(
                status: .serviceUnavailable,
                message: "all \(maxConnections) database connections of the web server are busy."
                    + " Fix: try again, or raise ETL_WEB_CONNECTIONS"
            )
        }
        if let c = lock.withLock({ idle.popLast() }) { return c }
        do { return try open() } catch {
            slots.signal()
            throw error
        }
    }

    /// Returns a pair to the pool (kept idle, up to `maxIdle`).
    private func give(_ c: Connections) {
        let kept = lock.withLock { () -> Bool in
            guard idle.count < maxIdle else { return false }
            idle.append(c)
            return true
        }
        if !kept { c.close() }
        slots.signal()
    }

    /// A pair whose call failed: closed rather than returned, so it never serves the next request.
    private func discard(_ c: Connections) {
        c.close()
        slots.signal()
    }

    /// Runs `body` with a connection pair on a backend thread. A pair whose call failed is closed
    /// rather than returned, so a broken connection never serves the next request.
    func run<T: Sendable>(_ body: @escaping @Sendable (Connections) throws -> T) async throws -> T {
        let origin = RequestOrigin.client
        return try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, Error>) in
            work.async { [self] in
                do {
                    let c = try take()
                    c.origin = origin
                    do {
                        let v = try body(c)
                        give(c)
                        k.resume(returning: v)
                    } catch let e as WebError {
                        give(c)  // a refusal of the request, not a fault of the connection
                        k.resume(throwing: e)
                    } catch let e as OperatorError {
                        give(c)
                        k.resume(throwing: e)
                    } catch {
                        discard(c)
                        k.resume(throwing: error)
                    }
                } catch {
                    k.resume(throwing: error)
                }
            }
        }
    }
}

/// Where the request a handler serves comes from, for the audit trail: set around each action's
/// handler (`WebApp.action`, `WebApp.api`), read by `Backend.run` before it leaves the task.
enum RequestOrigin {
    @TaskLocal static var client = "unknown"
}
