import Foundation

/// How a DAG run came to be: by its schedule, or by an operator (etlctl, the web UI).
public enum RunType: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case scheduled, manual

    public var description: String { rawValue }
}
