import Foundation
import Workflow

/// Whether a run of a DAG may start now, under the DAG's `maxActiveRuns`: the scheduler enqueues
/// tasks only for a run that may; the others stay queued, holding nothing, until a slot frees.
///
/// A run with work under way (state running, or a task queued, running or up for retry) holds a
/// slot until it ends: it is never stopped to make room. A run without (new, cleared, or waiting
/// for its upstream DAGs) holds none. When slots are free:
/// - a DAG without upstream DAGs (the ingestions) starts its waiting runs in logical-date order (then
///   creation order), so its runs go oldest date first: a scheduled run and a manual one for another
///   date never write the same tables at once;
/// - a DAG with upstream DAGs (the reports) starts whichever waiting run is ready first, since a run
///   whose upstream runs never come must not hold up the DAG's other dates (their upstream runs,
///   oldest first themselves, make them ready in date order).
public enum RunLimits {
    /// An active run as the rule sees it.
    public struct ActiveRun: Sendable, Equatable {
        public let id: Int64
        public let logicalDate: Date
        /// Work is under way: it holds a slot.
        public let inFlight: Bool

        public init(id: Int64, logicalDate: Date, inFlight: Bool) {
            self.id = id
            self.logicalDate = logicalDate
            self.inFlight = inFlight
        }
    }

    /// Whether run `id` (one of `runs`, the DAG's active runs) may do work with at most `limit` at
    /// once; `inDateOrder` for a DAG whose waiting runs start oldest date first.
    public static func mayStart(_ id: Int64, among runs: [ActiveRun], limit: Int, inDateOrder: Bool) -> Bool {
        guard let me = runs.first(where: { $0.id == id }) else { return false }
        if me.inFlight { return true }
        let free = limit - runs.filter(\.inFlight).count
        guard free > 0 else { return false }
        guard inDateOrder else { return true }
        let waiting = runs.filter { !$0.inFlight }.sorted { ($0.logicalDate, $0.id) < ($1.logicalDate, $1.id) }
        return waiting.prefix(free).contains { $0.id == id }
    }

    /// For one pass over all of a DAG's runs (the tick): how many slots are free, and the waiting
    /// runs to try, in order. The caller tries them one by one and stops when `free` have started;
    /// in date order it tries only the first `free` (a later date never starts before an earlier).
    public static func candidates(
        _ runs: [ActiveRun], limit: Int, inDateOrder: Bool
    ) -> (free: Int, tryInOrder: [Int64]) {
        let free = max(0, limit - runs.filter(\.inFlight).count)
        let waiting = runs.filter { !$0.inFlight }
        let ordered = inDateOrder ? waiting.sorted { ($0.logicalDate, $0.id) < ($1.logicalDate, $1.id) } : waiting
        return (free, (inDateOrder ? Array(ordered.prefix(free)) : ordered).map(\.id))
    }
}
