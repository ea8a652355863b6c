import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// The scheduler lease (one leader, fenced by a growing token) and the queued tasks a reconcile
/// checks against the queues.
extension MetadataStore {
    /// Takes or renews the scheduler lease for `ttl` seconds. Returns the fencing token when this
    /// holder leads (it grows each time leadership changes hands), nil when another holder does,
    /// and Postgres's clock.
    public func acquireLease(holder: String, ttl: Double) throws -> (token: Int64?, now: Date) {
        let r = try pg.query(
            """
            WITH l AS (
              INSERT INTO \(schema).scheduler_lease AS l (name, holder, fencing_token, expires_at)
              VALUES ('scheduler', $1, 1, now() + make_interval(secs => $2))
              ON CONFLICT (name) DO UPDATE SET holder = $1, expires_at = now() + make_interval(secs => $2),
                fencing_token = l.fencing_token + CASE WHEN l.holder = $1 THEN 0 ELSE 1 END
              WHERE l.holder = $1 OR l.expires_at < now()
              RETURNING fencing_token
            )
            SELECT (SELECT fencing_token FROM l), clock_timestamp()
            """, [holder, ttl]
        ).rows[0]  // the outer SELECT always returns one row
        return (try r.decode(Int64?.self, 0), try r.decode(Date.self, 1))
    }

    /// Makes this session's writes to runs, task instances and attempts conditional on `token`
    /// still being the lease's fencing token (migration 5); nil lifts it.
    public func setFence(_ token: Int64?) throws {
        try pg.query("SELECT set_config('etl.fence', $1, false)", [token.map(String.init) ?? ""])
    }

    /// SQLSTATE of a write refused because another scheduler took the lease over.
    public static let fencedOut = "ET001"

    public func releaseLease(holder: String) throws {
        try pg.query("UPDATE \(schema).scheduler_lease SET expires_at = now() WHERE holder = $1", [holder])
    }

    /// A task instance of an active run with what its message is made of.
    public typealias EnqueuedAttempt = (
        run: Int64, dag: String, logicalDate: Date, task: String, tryNumber: Int, queue: String, messageID: String?
    )

    /// Queued task instances (with their message id) of active runs.
    public func queuedInstances(olderThan seconds: Double = 0) throws -> [EnqueuedAttempt] {
        try attempts(
            "t.state = 'queued' AND t.queued_at < clock_timestamp() - make_interval(secs => $1)", [seconds])
    }

    /// Task instances of active runs matching `condition` (on `t`, the task instance).
    func attempts(_ condition: String, _ params: [any PostgresEncodable]) throws -> [EnqueuedAttempt] {
        try pg.query(
            """
            SELECT t.run_id, r.dag_id, r.logical_date, t.task_id, t.try_number, t.queue, t.message_id
            FROM \(schema).dag_run r JOIN \(schema).task_instance t USING (run_id)
            WHERE r.state IN ('queued', 'running') AND \(condition)
            """, params
        ).rows.map { r in
            (
                try r.decode(Int64.self, 0), try r.decode(String.self, 1), try r.decode(Date.self, 2),
                try r.decode(String.self, 3), try r.decode(Int.self, 4), try r.decode(String.self, 5),
                try r.decode(String?.self, 6)
            )
        }
    }
}
