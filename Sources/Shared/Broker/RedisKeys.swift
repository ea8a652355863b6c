import ETLSupport
import Foundation
import RedisClient
import Workflow

/// Names of every Redis key the system uses, under one prefix.
public struct RedisKeys: Sendable {
    public let prefix: String
    public init(prefix: String = "etl:") { self.prefix = prefix }
    public init(environment env: Environment) { self.init(prefix: env["ETL_REDIS_PREFIX"] ?? "etl:") }

    public func queue(_ name: String) -> String { "\(prefix)q:\(name)" }
    public func queueName(fromStream stream: String) -> String { String(stream.dropFirst(prefix.count + 2)) }
    public var events: String { "\(prefix)events" }
    public var dead: String { "\(prefix)dead" }
    public var heartbeats: String { "\(prefix)heartbeats" }
    public var workers: String { "\(prefix)workers" }
}
