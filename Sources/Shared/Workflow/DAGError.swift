import ETLSupport
import Foundation

/// A DAG definition that cannot work, with the reason.
public struct DAGError: Error, CustomStringConvertible, Sendable {
    public let dag: String
    public let problem: String
    public var description: String { "DAG \(dag): \(problem)" }

    public init(dag: String, problem: String) {
        self.dag = dag
        self.problem = problem
    }
}
