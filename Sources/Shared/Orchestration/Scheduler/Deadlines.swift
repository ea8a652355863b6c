import ETLSupport
import Foundation
import Workflow

/// How long runs may take, as operators set it (issue 16):
///
///   ETL_DAG_DEADLINES        `dag=minutes` pairs, separated by commas (`*=minutes` for every DAG
///                            with a schedule): a scheduled run not finished that many minutes
///                            after its interval ended raises a `deadline_missed` alert (the run goes
///                            on). Manual and backfill runs have no deadline.
///   ETL_UPSTREAM_WAIT_LIMIT  minutes a run may wait for its upstream DAGs' runs or its inputs
///                            (default 1440, one day; 0: for ever) before it fails with the reason
public struct RunDeadlines: Sendable {
    /// Seconds after the interval's end, per DAG.
    public let deadlines: [String: Double]
    /// Seconds a run may wait; nil: for ever.
    public let waitLimit: Double?

    public init(environment env: Environment, registry: Registry) throws {
        var out: [String: Double] = [:]
        var all: Double?
        for part in (env["ETL_DAG_DEADLINES"] ?? "").split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, let minutes = Double(pair[1]), minutes > 0, minutes <= 525_600 else {
                throw ConfigError(
                    variable: "ETL_DAG_DEADLINES",
                    problem: "'\(part)' is not dag=minutes (more than 0, at most a year)",
                    fix: "write it like b2b=90,monthly-sales=120 (or *=180 for every scheduled DAG)")
            }
            if pair[0] == "*" {
                all = minutes * 60
            } else {
                guard registry.dag(pair[0]) != nil else {
                    throw ConfigError(
                        variable: "ETL_DAG_DEADLINES", problem: "there is no DAG '\(pair[0])'",
                        fix: "name one of: \(registry.dags.map(\.id).sorted().joined(separator: ", "))")
                }
                out[pair[0]] = minutes * 60
            }
        }
        if let all {
            for d in registry.dags where out[d.id] == nil {
                if case .cron = d.schedule { out[d.id] = all }
            }
        }
        deadlines = out
        let raw = env["ETL_UPSTREAM_WAIT_LIMIT"] ?? "1440"
        guard let wait = Double(raw.trimmingCharacters(in: .whitespaces)), wait >= 0, wait <= 5_256_000 else {
            throw ConfigError(
                variable: "ETL_UPSTREAM_WAIT_LIMIT", problem: "'\(raw)' is not a number of minutes",
                fix: "give minutes (default 1440, one day), or 0 to wait for ever")
        }
        waitLimit = wait == 0 ? nil : wait * 60
    }

    /// When the run of `dag` for `logicalDate` misses its deadline: its interval's end plus the
    /// DAG's deadline; nil without one (or for a DAG without intervals).
    public func due(_ dag: DAG, logicalDate: Date) -> Date? {
        guard let after = deadlines[dag.id], case .cron(let cron) = dag.schedule,
            let end = cron.next(after: logicalDate)
        else { return nil }
        return end.addingTimeInterval(after)
    }

    /// Seconds as minutes for a message: "90", or "0.05".
    static func minutes(_ seconds: Double) -> String {
        let m = seconds / 60
        return m == m.rounded() ? "\(Int(m))" : "\((m * 1000).rounded() / 1000)"
    }
}
