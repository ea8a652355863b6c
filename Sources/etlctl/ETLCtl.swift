import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The operator's command line. Subcommands grow with the system; each prints a one-line reason
/// on standard error and exits non-zero when it fails.
@main
struct ETLCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etlctl",
        abstract: "Operate the ETL system: DAGs, runs, tasks, queues, workers and dead letters.",
        discussion: """
            Configuration comes from the environment, with ./local.env as fallback (ETL_ENV_FILE names \
            another file). Example:
              etlctl check
            """,
        subcommands: [
            Check.self, Dags.self, Runs.self, TasksCmd.self, Queues.self, Workers.self, DeadLetters.self, Logs.self,
            Generate.self, WeblogCmd.self, Loads.self, ReportsCmd.self, Summary.self, Migrate.self, DB.self, Audit.self,
            Users.self,
        ]
    )
}

/// Runs `body`, turning any error into a one-line message on stderr and exit code 1.
func failing<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch {
        FileHandle.standardError.write(Data("etlctl: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
