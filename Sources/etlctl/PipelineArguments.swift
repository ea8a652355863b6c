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

func settings() throws -> PipelineSettings {
    let env = try failing { try Environment.load() }
    return try failing { try PipelineSettings(environment: env) }
}

/// `YYYY-MM-DD` (today when nil), or a one-line error with the fix.
func day(_ text: String?) throws -> Day {
    guard let text else { return Day.today() }
    guard let d = Day(strict: text) else {
        throw fail("'\(shown(text))' is not a date. Fix: write it as YYYY-MM-DD, e.g. --date 2024-05-01")
    }
    return d
}

func nullable(_ s: String?) -> Any { s.map { $0 as Any } ?? NSNull() }
