import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Logging
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import ServiceLifecycle
import Tasks
import Workflow

/// `worker`: takes task messages from Redis and runs them against Postgres. Run any number.
@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run ETL tasks from the Redis queues.",
        discussion: """
            Run as many as you like, on any machines that reach the same Redis and Postgres. SIGTERM \
            stops fetching and lets running tasks finish within ETL_WORKER_GRACE seconds (default 30). Example:
              worker --concurrency 4 --queues default
            """
    )

    @Option(help: "Tasks run at once by this process.")
    var concurrency: Int = 1

    @Option(help: "Comma-separated queues to take tasks from (default: every queue the DAGs use).")
    var queues: String?

    @Option(
        help: ArgumentHelp(
            "Messages a slot takes at once when several wait"
                + " (default ETL_WORKER_PREFETCH or 64; 1 takes one at a time).",
            valueName: "n"))
    var prefetch: Int?

    func validate() throws {
        guard (1...256).contains(concurrency) else {
            throw ValidationError("--concurrency must be from 1 to 256, got \(concurrency)")
        }
        if let prefetch, !(1...1000).contains(prefetch) {
            throw ValidationError("--prefetch must be from 1 to 1000, got \(prefetch)")
        }
    }

    func run() async throws {
        ProcessSignals.prepare()
        let logger = Logger(label: "etl.worker")
        let env = try failing { try Environment.load() }
        try failing { try LoggingSetup.bootstrap(env) }
        let registry = try failing { try Catalog.registry(environment: env) }
        let qs =
            queues?.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            ?? (registry.queues.isEmpty ? ["default"] : registry.queues)
        let service = try failing {
            try WorkerService(
                env: env, registry: registry, queues: qs, concurrency: concurrency, prefetch: prefetch, logger: logger)
        }
        do {
            try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                .run()
        } catch {
            FileHandle.standardError.write(Data("worker: \(error)\n".utf8))
            throw ExitCode(1)
        }
        // Tasks handed back after the grace period may still hold slot threads in C calls: the
        // process ends here, with a code that says so.
        if service.outcome == .handedBack { throw ExitCode(3) }
    }
}

func failing<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch {
        FileHandle.standardError.write(Data("worker: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
