import ETLSupport
import Foundation
import Metadata
import Workflow

/// Backfill, as `airflow dags backfill`: runs of a DAG for a range of logical dates, made in date
/// order (the scheduler then runs them within the DAG's max active runs, oldest first). A report
/// DAG's backfill brings its upstream DAGs' runs for the same dates, upstream first.
extension OperatorActions {
    /// What to do with dates that have a run already.
    public enum Rerun: String, Sendable, CaseIterable {
        /// Leave them as they are.
        case none
        /// Run their failed and upstream-failed tasks again (with what depends on them).
        case failed
        /// Run every task again.
        case all
    }

    /// One DAG and date of a backfill, and what the backfill does there.
    public struct BackfillStep: Sendable, Equatable {
        public enum Action: String, Sendable {
            /// No run for the date yet: make one.
            case create
            /// Its run is cleared (all or its failed tasks) to run again.
            case rerun
            /// Its run stays as it is.
            case keep
        }

        public let dag: String
        public let logicalDate: Date
        public let action: Action
        /// The run, when there is one already (and after `backfill`, always).
        public var run: Int64?
        /// The existing run's state, when there is one.
        public let state: RunState?
    }

    /// The logical dates of `dag`'s schedule from `from` to `to`, both included (every day for a DAG
    /// without a schedule); refuses an empty or reversed range and more than 1,000 dates.
    public func backfillDates(_ dag: DAG, from: Date, to: Date, now: Date = Date()) throws -> [Date] {
        guard from <= to else {
            throw OperatorError(
                .invalid, "the backfill range ends before it starts. Fix: give --from a date not after --to")
        }
        // The whole --to day is in the range (a cron firing at 06:00 has its run of that day).
        let end = to.addingTimeInterval(86_400)
        var dates: [Date] = []
        switch dag.schedule {
        case .cron(let cron):
            // Every interval that starts inside the range and has ended by now.
            var logical = cron.next(after: from.addingTimeInterval(-60))
            while let l = logical, l < end {
                guard let intervalEnd = cron.next(after: l), intervalEnd <= now else {
                    throw OperatorError(
                        .invalid,
                        "the interval of \(PostgresTimestamp.format(l)) has not ended yet. "
                            + "Fix: end the range at the latest complete interval (etlctl dags latest \(dag.id))")
                }
                dates.append(l)
                guard dates.count <= 1000 else { break }
                logical = intervalEnd
            }
        case .manual, .once:
            var d = from
            while d < end && dates.count <= 1000 {
                dates.append(d)
                d = d.addingTimeInterval(86_400)
            }
        }
        guard dates.count <= 1000 else {
            throw OperatorError(.invalid, "the backfill would make over 1,000 runs of \(dag.id). Fix: a shorter range")
        }
        guard !dates.isEmpty else {
            throw OperatorError(.invalid, "\(dag.id)'s schedule has no interval in that range. Fix: a wider range")
        }
        return dates
    }

    /// The DAG and, for each DAG it waits for (and each that one waits for), those: upstream first.
    public func backfillDAGs(_ dag: String) throws -> [DAG] {
        var order: [DAG] = []
        var seen = Set<String>()
        func visit(_ id: String) throws {
            guard seen.insert(id).inserted else { return }
            let d = try self.dag(id)
            for u in d.upstreamDAGs { try visit(u) }
            order.append(d)
        }
        try visit(dag)
        return order
    }

    /// What a backfill of `dag` from `from` to `to` would do, date by date (oldest first), each
    /// upstream DAG's step before its downstream's.
    public func backfillPlan(_ dag: String, from: Date, to: Date, rerun: Rerun) throws -> [BackfillStep] {
        let dags = try backfillDAGs(dag)
        let store = try self.store
        let dates = try backfillDates(try self.dag(dag), from: from, to: to)
        var existing: [String: [Date: MetadataStore.RunRow]] = [:]
        for d in dags {
            // The dates' default runs: a run of another output (`top=3`) is another report.
            for r in try store.runRows(dag: d.id, limit: 100_000) where r.variant.isEmpty {
                existing[d.id, default: [:]][r.logicalDate] = r
            }
        }
        var steps: [BackfillStep] = []
        for date in dates {
            for d in dags {
                guard let r = existing[d.id]?[date] else {
                    steps.append(.init(dag: d.id, logicalDate: date, action: .create, run: nil, state: nil))
                    continue
                }
                // A run still going is kept whatever --rerun says: clearing it would redo its upstream
                // tasks while downstream ones run.
                let again = !r.state.isFinished ? false : rerun == .all || (rerun == .failed && r.state == .failed)
                steps.append(
                    .init(dag: d.id, logicalDate: date, action: again ? .rerun : .keep, run: r.id, state: r.state))
            }
        }
        return steps
    }

    /// Carries `plan` out: makes the missing runs (type backfill), clears the reruns, wakes the
    /// scheduler. Returns the plan with every step's run.
    public func backfill(_ plan: [BackfillStep], rerun: Rerun) throws -> [BackfillStep] {
        let dates = plan.map { String(PostgresTimestamp.format($0.logicalDate).prefix(10)) }.sorted()
        return try audited(
            "backfill", Array(Set(plan.map(\.dag))).sorted().joined(separator: ","),
            detail: "\(dates.first ?? "-")..\(dates.last ?? "-"), rerun \(rerun.rawValue)"
        ) { try backfillUnaudited(plan, rerun: rerun) }
    }

    private func backfillUnaudited(_ plan: [BackfillStep], rerun: Rerun) throws -> [BackfillStep] {
        let store = try self.store
        var done: [BackfillStep] = []
        for var step in plan {
            let d = try self.dag(step.dag)
            switch step.action {
            case .create:
                // Made meanwhile (the scheduler's run for the latest date): that run is the date's run.
                step.run =
                    try store.createRun(d, logicalDate: step.logicalDate, type: .backfill)
                    ?? store.runRows(dag: d.id, limit: 100_000).first {
                        $0.logicalDate == step.logicalDate && $0.variant.isEmpty
                    }?.id
            case .rerun:
                guard let run = step.run else { break }
                if rerun == .all {
                    _ = try store.clear(run: run, tasks: Set(d.tasks.map(\.id)))
                    try queue.wakeScheduler(dag: d.id, run: run, reason: "backfill", by: actor)
                } else {
                    _ = try clearFailedUnaudited(dag: d.id, run: run)  // wakes the scheduler itself
                }
            case .keep: break
            }
            if step.action == .create, let run = step.run {
                try queue.wakeScheduler(dag: d.id, run: run, reason: "backfill", by: actor)
            }
            done.append(step)
        }
        return done
    }
}
