import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

extension ETLCtl {
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade the metadata tables and the pipelines' schemas, then exit.",
            discussion: """
                Safe to run any number of times, also while schedulers and workers run (the compose file's \
                one-shot migrate service runs it before they start). Example:
                  etlctl migrate
                """
        )
        func run() throws {
            let ctx = try Context()
            // metadata migrations and the pipelines' schemas, then the DAGs registered
            _ = try ctx.store(forceSetup: true)
            let s = try settings()
            print(
                "migrated: metadata schema \(ctx.schema) and \(ctx.registry.dags.count) DAGs; "
                    + "data schemas \(s.datalake), \(s.loads), \(s.datamart)"
            )
        }
    }
}
