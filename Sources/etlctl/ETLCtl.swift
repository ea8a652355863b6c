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
            Generate.self, WeblogCmd.self, Loads.self, Summary.self, Migrate.self,
        ]
    )
}

extension ETLCtl {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Connect to Postgres and Redis and report their versions.",
            discussion: """
                A smoke check of both clients: a parameterised query, a COPY into a temporary table, \
                and a Redis round trip and pipeline. Example:
                  DATABASE_URL=postgres://etl:...@127.0.0.1:5432/etl REDIS_URL=redis://:...@127.0.0.1:6379/0 \
                etlctl check
                """
        )

        @Flag(help: "Print the result as one JSON object.")
        var json = false

        func run() throws {
            let env = try failing { try Environment.load() }
            try failing { try LoggingSetup.bootstrap(env) }
            let report = try failing { try SmokeCheck.run(environment: env) }
            if json {
                let data = try JSONSerialization.data(
                    withJSONObject: report.dictionary, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(
                    "postgres ok  \(report.postgresEndpoint)  \(report.postgresVersion)"
                        + "  (query, transaction, COPY of \(report.copiedRows) rows)"
                )
                print(
                    "redis    ok  \(report.redisEndpoint)  Redis \(report.redisVersion)"
                        + "  (round trip, pipeline of \(report.pipelined), Lua)"
                )
            }
        }
    }
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
