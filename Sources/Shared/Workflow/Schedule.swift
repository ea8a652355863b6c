import ETLSupport
import Foundation

/// When a DAG runs, as Airflow users write it: `@once`, `@hourly`, `@daily`, `@weekly`,
/// `@monthly`, `@yearly`, a five-field cron expression, or `nil`/`@none` (only when triggered).
///
/// As in Airflow, a scheduled run's logical date is the start of its data interval, and the run
/// is due once that interval has ended: the `@daily` run for 2024-05-01 starts on 2024-05-02 00:00.
public enum Schedule: Sendable, Equatable, CustomStringConvertible {
    case manual
    case once
    case cron(CronExpression)

    public init(_ text: String?) throws {
        guard let raw = text?.trimmingCharacters(in: .whitespaces), !raw.isEmpty, raw != "@none", raw != "None" else {
            self = .manual
            return
        }
        switch raw.lowercased() {
        case "@once": self = .once
        case "@hourly": self = .cron(try CronExpression("0 * * * *"))
        case "@daily", "@midnight": self = .cron(try CronExpression("0 0 * * *"))
        case "@weekly": self = .cron(try CronExpression("0 0 * * 0"))
        case "@monthly": self = .cron(try CronExpression("0 0 1 * *"))
        case "@yearly", "@annually": self = .cron(try CronExpression("0 0 1 1 *"))
        default:
            if raw.hasPrefix("@") { throw ScheduleError(text: raw, problem: "'\(raw)' is not a known preset") }
            self = .cron(try CronExpression(raw))
        }
    }

    public var description: String {
        switch self {
        case .manual: return "@none"
        case .once: return "@once"
        case .cron(let c):
            switch c.description {
            case "0 * * * *": return "@hourly"
            case "0 0 * * *": return "@daily"
            case "0 0 * * 0": return "@weekly"
            case "0 0 1 * *": return "@monthly"
            case "0 0 1 1 *": return "@yearly"
            default: return c.description
            }
        }
    }

    /// The logical dates of the runs due by `now`, after `lastLogical` (or from `start` when there
    /// was none). With `catchup` off only the latest due interval is returned, as in Airflow.
    public func dueLogicalDates(start: Date, lastLogical: Date?, now: Date, catchup: Bool, limit: Int = 1000) -> [Date]
    {
        switch self {
        case .manual:
            return []
        case .once:
            return lastLogical == nil && start <= now ? [start] : []
        case .cron(let cron):
            // The first interval starts at the first fire time at or after `start`.
            var logical: Date
            if let last = lastLogical {
                guard let n = cron.next(after: last) else { return [] }
                logical = n
            } else {
                guard let n = cron.next(after: start.addingTimeInterval(-60)) else { return [] }
                logical = n
            }
            if !catchup {
                // Only the latest due interval counts: start near `now` instead of walking every
                // interval since `start` (an hourly DAG that started two years ago has 17,000,
                // walked on every scheduler tick and every DAG list). Look back 1 h, 2 h, 4 h, ...
                // until two fire times f1 < f2 <= now lie after the probe: the latest due interval
                // starts at f1 or later, whatever the cron's rhythm.
                var back = 3600.0
                while back < 20 * 366 * 86_400 {
                    let probe = now.addingTimeInterval(-back)
                    if probe <= logical { break }
                    if let f1 = cron.next(after: probe), let f2 = cron.next(after: f1), f2 <= now {
                        logical = f1
                        break
                    }
                    back *= 2
                }
            }
            var due: [Date] = []
            while let end = cron.next(after: logical), end <= now {
                due.append(logical)
                if due.count > limit { due.removeFirst() }
                logical = end
            }
            return catchup ? due : Array(due.suffix(1))
        }
    }

    /// The next run the scheduler will create: its logical date and when it is due (`now` when it
    /// is due already). Nil for a manual DAG or an `@once` DAG that has run.
    public func nextRun(start: Date, lastLogical: Date?, now: Date, catchup: Bool) -> (logicalDate: Date, due: Date)? {
        if let due = dueLogicalDates(start: start, lastLogical: lastLogical, now: now, catchup: catchup).first {
            return (due, now)
        }
        switch self {
        case .manual:
            return nil
        case .once:
            return lastLogical == nil ? (start, start) : nil
        case .cron(let cron):
            guard
                let logical = lastLogical.flatMap({ cron.next(after: $0) })
                    ?? cron.next(after: start.addingTimeInterval(-60)),
                let end = cron.next(after: logical)
            else { return nil }
            return (logical, end)
        }
    }
}
