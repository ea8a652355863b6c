import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

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
