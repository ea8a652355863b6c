import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Hummingbird
import Logging
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Web
import Workflow

/// `webserver`: the web UI, JSON API and Prometheus metrics (port 8080 by default).
@main
struct WebserverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webserver",
        abstract: "Serve the web UI, the JSON API under /api and Prometheus metrics at /metrics.",
        discussion: """
            Log in with ETL_WEB_USER and ETL_WEB_PASSWORD; scripts send Authorization: Bearer $ETL_WEB_API_TOKEN. \
            Reads the same Postgres and Redis settings as the scheduler and workers. Example:
              webserver --host 0.0.0.0 --port 8080
            """
    )

    @Option(help: "Address to listen on (default: ETL_WEB_HOST, else 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (default: ETL_WEB_PORT, else 8080).") var port: Int?

    func validate() throws {
        if let port, !(0...65535).contains(port) {
            throw ValidationError(
                "--port \(port) is not a port. Fix: use 1 to 65535 (0 for any free one), e.g. --port 8080")
        }
    }

    func run() async throws {
        ProcessSignals.prepare()  // signals: Hummingbird's ServiceGroup handles SIGTERM and SIGINT
        let app: WebApp
        do {
            let env = try Environment.load()
            try LoggingSetup.bootstrap(env)
            var config = try WebConfig(environment: env)
            if let host { config.host = host }
            if let port { config.port = port }
            let backend = try Backend(environment: env)
            try backend.prepare(config: config)
            app = WebApp(backend: backend, config: config)
        } catch {
            FileHandle.standardError.write(Data("webserver: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let logger = Logger(label: "etl.web")
        try await app.application(logger: logger).runService()
    }
}
