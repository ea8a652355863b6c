import Broker
import ETLSupport
import Foundation
import Metadata
import PostgresClient
import RedisClient
import Workflow

/// Thrown when a task runs past its execution timeout.
public struct TaskTimeout: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "timed out: the task ran past its execution timeout" }
}
