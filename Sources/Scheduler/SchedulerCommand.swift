import ArgumentParser
import AsyncHTTPClient
import Broker
import ETLSupport
import Foundation
import Logging
import NIOCore
import Orchestration
import PostgresClient
import RedisClient
import ServiceLifecycle
import Tasks

/// `scheduler`: creates DAG runs and enqueues ready tasks. Run one, or two for a hot standby.
@main
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Create DAG runs on their schedules and enqueue tasks as their upstream tasks finish.",
        discussion: """
            Two schedulers may run: one leads through a lease in Postgres (ETL_SCHEDULER_LEASE seconds, \
            default 5) and the other takes over when the leader stops renewing it. SIGTERM or SIGINT \
            stops it gracefully (the lease is given up). Example:
              scheduler
            """
    )

    /// Alerts' POSTs (HTTP and HTTPS), from the alert sender's thread.
    static let post: AlertSender.Post = { url, body, timeout in
        var request = try HTTPClient.Request(url: url.absoluteString, method: .POST)
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .data(body)
        let response = try HTTPClient.shared.execute(
            request: request, deadline: .now() + .milliseconds(Int64(timeout * 1000))
        ).wait()
        return Int(response.status.code)
    }

    /// `ETL_RETENTION_DAYS` (unset or 0: off): while this scheduler leads, `etlctl db clean
    /// --older-than <days>d` once a day (the first an hour after it starts leading), from a thread
    /// and a connection of its own, so scheduling never waits for it.
    static func startRetention(env: Environment, service: SchedulerService, logger: Logger) throws {
        let raw = env["ETL_RETENTION_DAYS"] ?? "0"
        guard let days = Double(raw.trimmingCharacters(in: .whitespaces)), days >= 0, days <= 36_500 else {
            throw ConfigError(
                variable: "ETL_RETENTION_DAYS", problem: "'\(raw)' is not a number of days",
                fix: "give the age in days past which runs, logs and dead letters are deleted (e.g. 90), or 0 for never"
            )
        }
        guard days > 0 else { return }
        let settings = try PipelineSettings(environment: env)
        let schema = env["ETL_SCHEMA"] ?? "etl"
        let every = try env.seconds("ETL_RETENTION_EVERY", default: 86_400, range: 1...(30 * 86_400))
        let t = Thread {
            var leadingSince: Double?
            var last: Double?
            while !service.stop.isSet {
                sleepSeconds(1)
                guard service.isLeading else {
                    leadingSince = nil
                    continue
                }
                let now = monotonicSeconds()
                let since = leadingSince ?? now
                leadingSince = since
                guard now - (last ?? (since - every + min(3600, every))) >= every else { continue }
                last = now
                do {
                    let pg = try PostgresConnection(config: PostgresConfig(environment: env))
                    defer { pg.close() }
                    let queue = TaskQueue(
                        redis: try RedisConnection(config: RedisConfig(environment: env)),
                        keys: RedisKeys(environment: env))
                    defer { queue.redis.close() }
                    let c = try Retention.clean(
                        pg: pg, schema: schema, loads: settings.loads, queue: queue, olderThan: days * 86_400,
                        dryRun: false)
                    logger.info("retention: deleted \(c.summary), older than \(raw) days")
                } catch {
                    logger.warning("retention: \(error); trying again at the next round")
                }
            }
        }
        t.name = "retention"
        t.start()
    }

    func run() async throws {
        ProcessSignals.prepare()
        let logger = Logger(label: "etl.scheduler")
        do {
            let env = try Environment.load()
            try LoggingSetup.bootstrap(env)
            let service = try SchedulerService(
                env: env, registry: try Catalog.registry(environment: env), logger: logger, post: Self.post)
            try Self.startRetention(env: env, service: service, logger: logger)
            try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                .run()
        } catch {
            FileHandle.standardError.write(Data("scheduler: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
