import Broker
import ETLSupport
import Foundation
import PostgresClient

/// Deletes what is older than a cutoff (issue 16): finished runs with their task instances and
/// attempts (their logs), alerts, old loads' rejects and the load rows no ledger needs, and dead
/// letters. `etlctl db clean --older-than 90d` and the leading scheduler (`ETL_RETENTION_DAYS`)
/// run it.
///
/// Kept whatever their age: runs not finished, the newest run of each DAG (the scheduler's next
/// scheduled date follows it), every ledger row (`b2b_day`, `weblog_file`, `weblog_range`,
/// `weblog_seen`, `report_computed`: they say what is loaded, so that no file or export is loaded
/// again) and the load rows they reference. Deletions go in batches of `batch` rows, each its own
/// short transaction that waits at most 1 s for a lock (then the batch is tried again later), so
/// the scheduler and the workers never wait behind it.
public enum Retention {
    public struct Counts: Sendable, Equatable, Codable {
        public var runs = 0
        public var taskInstances = 0
        public var attempts = 0
        public var alerts = 0
        public var rejects = 0
        public var loads = 0
        public var deadLetters = 0
        public init() {}
        enum CodingKeys: String, CodingKey {
            case runs
            case taskInstances = "task_instances"
            case attempts, alerts, rejects, loads
            case deadLetters = "dead_letters"
        }
        public var summary: String {
            "\(runs) run(s) with \(taskInstances) task instance(s) and \(attempts) attempt(s), \(alerts) alert(s), "
                + "\(rejects) reject(s), \(loads) load record(s), \(deadLetters) dead letter(s)"
        }
    }

    /// Deletes (or with `dryRun` counts) what ended more than `seconds` ago. `loads` is the loads
    /// schema (skipped when it does not exist); `queue`, when given, has its dead letters trimmed.
    public static func clean(
        pg: PostgresConnection, schema s: String, loads: String, queue: TaskQueue?, olderThan seconds: Double,
        dryRun: Bool, batch: Int = 500
    ) throws -> Counts {
        var c = Counts()
        let cutoff = try pg.query("SELECT now() - make_interval(secs => $1)", [seconds]).rows[0].decode(Date.self, 0)
        // Finished runs, oldest first, except each DAG's newest.
        let runs = """
            SELECT r.run_id FROM \(s).dag_run r
            WHERE r.state IN ('success', 'failed') AND coalesce(r.ended_at, r.created_at) < $1 AND r.run_id > $2
              AND r.run_id <> (SELECT max(n.run_id) FROM \(s).dag_run n WHERE n.dag_id = r.dag_id)
            ORDER BY r.run_id LIMIT $3
            """
        try batches(pg, runs, cutoff: cutoff, batch: batch) { ids in
            let n = try step(pg) { tx in
                try tx.query(
                    """
                    WITH v AS (SELECT unnest($1::bigint[]) AS run_id),
                    a AS (
                      DELETE FROM \(s).task_attempt WHERE run_id IN (SELECT run_id FROM v) AND $2 RETURNING 1
                    ), t AS (
                      SELECT count(*) AS n FROM \(s).task_instance WHERE run_id IN (SELECT run_id FROM v)
                    ), r AS (
                      -- Their task instances go with them (ON DELETE CASCADE).
                      DELETE FROM \(s).dag_run WHERE run_id IN (SELECT run_id FROM v) AND $2 RETURNING 1
                    )
                    SELECT (SELECT count(*) FROM v), (SELECT n FROM t),
                      CASE WHEN $2 THEN (SELECT count(*) FROM a)
                           ELSE (SELECT count(*) FROM \(s).task_attempt WHERE run_id IN (SELECT run_id FROM v)) END,
                      (SELECT count(*) FROM r)
                    """, [PostgresArray(ids.map(String.init)), !dryRun]
                ).rows[0]
            }
            c.runs += try n.decode(Int.self, 0)
            c.taskInstances += try n.decode(Int.self, 1)
            c.attempts += try n.decode(Int.self, 2)
        }
        // Alerts (their deliveries and attempts go with them) made before the cutoff.
        c.alerts = try step(pg) { tx in
            try tx.query(
                """
                WITH d AS (DELETE FROM \(s).alert WHERE created_at < $1 AND $2 RETURNING 1)
                SELECT CASE WHEN $2 THEN (SELECT count(*) FROM d)
                  ELSE (SELECT count(*) FROM \(s).alert WHERE created_at < $1) END
                """, [cutoff, !dryRun]
            ).rows[0].decode(Int.self, 0)
        }
        if try pg.tableExists("\(loads).load") {
            let old = """
                SELECT id FROM \(loads).load
                WHERE state IN ('finished', 'broken') AND coalesce(finished_at, broke_at, started_at) < $1 AND id > $2
                ORDER BY id LIMIT $3
                """
            try batches(pg, old, cutoff: cutoff, batch: batch) { ids in
                let n = try step(pg) { tx in
                    try tx.query(
                        """
                        WITH v AS (SELECT unnest($1::bigint[]) AS id),
                        needed AS (
                          -- The loads a ledger row references: kept, so nothing is loaded again.
                          SELECT id FROM v WHERE EXISTS (SELECT 1 FROM \(loads).weblog_file f WHERE f.load_id = v.id)
                            OR EXISTS (SELECT 1 FROM \(loads).weblog_range g WHERE g.load_id = v.id)
                            OR EXISTS (SELECT 1 FROM \(loads).weblog_seen w WHERE w.load_id = v.id)
                        ), rj AS (
                          DELETE FROM \(loads).reject WHERE load_id IN (SELECT id FROM v) AND $2 RETURNING 1
                        ), l AS (
                          DELETE FROM \(loads).load
                          WHERE id IN (SELECT id FROM v) AND id NOT IN (SELECT id FROM needed) AND $2 RETURNING 1
                        )
                        SELECT CASE WHEN $2 THEN (SELECT count(*) FROM rj)
                                 ELSE (SELECT count(*) FROM \(loads).reject WHERE load_id IN (SELECT id FROM v)) END,
                          CASE WHEN $2 THEN (SELECT count(*) FROM l)
                               ELSE (SELECT count(*) FROM v WHERE id NOT IN (SELECT id FROM needed)) END
                        """, [PostgresArray(ids.map(String.init)), !dryRun]
                    ).rows[0]
                }
                c.rejects += try n.decode(Int.self, 0)
                c.loads += try n.decode(Int.self, 1)
            }
        }
        if let queue { c.deadLetters = try queue.trimDeadLetters(before: cutoff, dryRun: dryRun) }
        return c
    }

    /// Runs `body` on the ids `query` selects (`$1` the cutoff, `$2` the last id seen, `$3` the
    /// batch size), batch after batch in id order, until none is left: ids kept by `body` are
    /// never looked at again.
    private static func batches(
        _ pg: PostgresConnection, _ query: String, cutoff: Date, batch: Int, _ body: ([Int64]) throws -> Void
    ) throws {
        var after: Int64 = 0
        while true {
            let ids = try pg.query(query, [cutoff, after, batch]).rows.map { try $0.decode(Int64.self, 0) }
            guard let last = ids.last else { return }
            after = last
            try body(ids)
        }
    }

    /// One batch: its own transaction, waiting at most 1 s for a lock (a lock timeout is tried
    /// again after a pause, up to 10 times).
    private static func step<T>(
        _ pg: PostgresConnection, _ body: (PostgresConnection) throws -> T
    )
        throws -> T
    {
        var tries = 0
        while true {
            do {
                return try pg.transaction { tx in
                    try tx.query("SET LOCAL lock_timeout = '1s'")
                    return try body(tx)
                }
            } catch let e as PostgresError where e.isLockTimeout && tries < 10 {
                tries += 1
                sleepSeconds(0.5)
            }
        }
    }

    /// `90d`, `12h`, `30m` (or a number of days) as seconds; nil when it is none of these.
    public static func age(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [Character: Double] = ["d": 86_400, "h": 3600, "m": 60, "s": 1]
        if let u = t.last, let f = units[u], let n = Double(t.dropLast()), n > 0 { return n * f }
        if let n = Double(t), n > 0 { return n * 86_400 }
        return nil
    }
}
