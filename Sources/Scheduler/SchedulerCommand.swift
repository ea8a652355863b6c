import ArgumentParser
import AsyncHTTPClient
import ETLSupport
import Foundation
import Logging
import NIOCore
import Orchestration
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

    func run() async throws {
        ProcessSignals.prepare()
        let logger = Logger(label: "etl.scheduler")
        do {
            let env = try Environment.load()
            try LoggingSetup.bootstrap(env)
            let service = try SchedulerService(
                env: env, registry: try Catalog.registry(environment: env), logger: logger, post: Self.post)
            try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                .run()
        } catch {
            FileHandle.standardError.write(Data("scheduler: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
