import ArgumentParser
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

/// `scheduler`: creates DAG runs and enqueues ready tasks. Run one, or two for a hot standby.
@main
struct SchedulerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Create DAG runs on their schedules and enqueue tasks as their upstream tasks finish.",
        discussion: """
            Two schedulers may run: one leads through a lease in Postgres (ETL_SCHEDULER_LEASE seconds, \
            default 5) and the other takes over when the leader stops renewing it. Example:
              scheduler
            """
    )

    func run() throws {
        ProcessSignals.install()
        do {
            let env = try Environment.load()
            try LoggingSetup.bootstrap(env)
            let registry = try Catalog.registry(environment: env)
            try SchedulerService(env: env, registry: registry, logger: Logger(label: "etl.scheduler")).run()
        } catch {
            FileHandle.standardError.write(Data("scheduler: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
