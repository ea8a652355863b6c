import Foundation

/// Where a DAG run is: created and waiting (`queued`), with tasks started (`running`), or ended.
public enum RunState: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case queued, running, success, failed

    /// An ended run (success or failed): nothing of it runs any more.
    public var isFinished: Bool { self == .success || self == .failed }

    public var description: String { rawValue }
}
