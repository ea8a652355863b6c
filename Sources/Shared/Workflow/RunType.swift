import Foundation

/// How a DAG run came to be: by its schedule, by an operator (etlctl, the web UI), or by a backfill.
public enum RunType: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case scheduled, manual, backfill

    public var description: String { rawValue }
}
