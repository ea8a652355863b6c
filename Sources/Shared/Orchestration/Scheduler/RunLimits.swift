import Foundation
import Workflow

/// Which runs of a DAG may do work now, under the DAG's `maxActiveRuns`: the scheduler enqueues
/// tasks only for admitted runs; the others stay queued, holding nothing, until a slot frees.
///
/// A running run keeps its slot until it ends (it is never stopped to make room); queued runs are
/// admitted in logical-date order (then creation order) while fewer than the limit are. So with
/// the pipelines' limit of 1 a DAG's runs go one at a time, oldest date first: a scheduled run and
/// a manual one for another date never write the same tables at once.
public enum RunLimits {
    /// An active run as the rule sees it.
    public struct ActiveRun: Sendable, Equatable {
        public let id: Int64
        public let logicalDate: Date
        public let state: RunState

        public init(id: Int64, logicalDate: Date, state: RunState) {
            self.id = id
            self.logicalDate = logicalDate
            self.state = state
        }
    }

    /// The ids of `runs` (one DAG's active runs) that may do work with at most `limit` at once.
    public static func admitted(_ runs: [ActiveRun], limit: Int) -> Set<Int64> {
        var admitted = Set(runs.filter { $0.state == .running }.map(\.id))
        let waiting = runs.filter { $0.state == .queued }.sorted {
            ($0.logicalDate, $0.id) < ($1.logicalDate, $1.id)
        }
        for r in waiting where admitted.count < limit { admitted.insert(r.id) }
        return admitted
    }
}
