import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// An operator's cancel of one task instance. A task that has not started (scheduled, queued,
/// waiting for its retry) is cancelled at once: its queued message is acknowledged unrun. A running
/// one is asked to stop: its worker reads the request with its next lease renewal, interrupts the
/// task (the task's next `checkDeadline` throws, and the statement running on its connections is
/// cancelled), rolls back what the task had not committed and records the attempt `cancelled`.
/// Should the worker not do so (frozen, cut off), the scheduler ends the attempt itself after a
/// while, ending the sessions registered under its lease (`overdueCancels`).
extension MetadataStore {
    /// What a cancel request did.
    public enum CancelOutcome: Sendable, Equatable {
        /// It was running: its worker stops it within a few seconds.
        case stopping(tryNumber: Int)
        /// It had not started: it is cancelled now.
        case cancelled
        /// It had ended already, in this state.
        case alreadyEnded(TaskState)
    }

    /// Cancels `task` of run `run` in the name of `by` (see the type's comment).
    public func requestCancel(run: Int64, task: String, by: String) throws -> CancelOutcome? {
        try pg.transaction { tx -> CancelOutcome? in
            guard
                let row = try tx.query(
                    """
                    SELECT state, try_number, state = 'running' AND lease_runner IS NULL
                    FROM \(s).task_instance WHERE run_id = $1 AND task_id = $2 FOR UPDATE
                    """,
                    [run, task]
                ).rows.first
            else { return nil }
            let state = TaskState(rawValue: try row.decode(String.self, 0)) ?? .failed
            let tryNumber = try row.decode(Int.self, 1)
            // Handed back by a worker whose slot was busy, and not started again: nobody runs it.
            let unowned = try row.decode(Bool.self, 2)
            switch state {
            case .running where unowned:
                try tx.query(
                    """
                    UPDATE \(s).task_instance SET state = 'cancelled', ended_at = clock_timestamp(),
                      error = 'cancelled by ' || $3 || ' before it ran', cancel_requested_at = clock_timestamp(),
                      cancel_requested_by = $3, lease_expires_at = NULL, lease_pids = '{}', lease_pid_starts = '{}'
                    WHERE run_id = $1 AND task_id = $2
                    """, [run, task, by])
                try tx.query(
                    """
                    UPDATE \(s).task_attempt SET state = 'cancelled', ended_at = clock_timestamp(),
                      error = 'cancelled by ' || $4 || ' before it ran'
                    WHERE run_id = $1 AND task_id = $2 AND try_number = $3 AND state = 'running'
                    """, [run, task, tryNumber, by])
                return .cancelled
            case .running:
                try tx.query(
                    """
                    UPDATE \(s).task_instance
                    SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()),
                      cancel_requested_by = coalesce(cancel_requested_by, $3)
                    WHERE run_id = $1 AND task_id = $2
                    """, [run, task, by])
                return .stopping(tryNumber: tryNumber)
            case .scheduled, .queued, .upForRetry:
                try tx.query(
                    """
                    UPDATE \(s).task_instance SET state = 'cancelled', ended_at = clock_timestamp(), next_try_at = NULL,
                      error = 'cancelled by ' || $3 || ' before it ran', cancel_requested_at = clock_timestamp(),
                      cancel_requested_by = $3
                    WHERE run_id = $1 AND task_id = $2
                    """, [run, task, by])
                return .cancelled
            case .success, .failed, .upstreamFailed, .cancelled:
                return .alreadyEnded(state)
            }
        }
    }

    /// A running attempt whose cancel its worker has not carried out.
    public struct OverdueCancel: Sendable {
        public let key: AttemptKey
        public let dag: String
        public let by: String
    }

    /// Running attempts asked to stop more than `seconds` ago (their worker froze, was cut off, or
    /// died with the request standing).
    public func overdueCancels(after seconds: Double) throws -> [OverdueCancel] {
        try pg.query(
            """
            SELECT t.run_id, t.task_id, t.try_number, r.dag_id, coalesce(t.cancel_requested_by, 'an operator')
            FROM \(s).task_instance t JOIN \(s).dag_run r USING (run_id)
            WHERE t.state = 'running' AND t.cancel_requested_at < clock_timestamp() - make_interval(secs => $1)
            """, [seconds]
        ).rows.map {
            OverdueCancel(
                key: AttemptKey(
                    run: try $0.decode(Int64.self, 0), task: try $0.decode(String.self, 1),
                    tryNumber: try $0.decode(Int.self, 2)),
                dag: try $0.decode(String.self, 3), by: try $0.decode(String.self, 4))
        }
    }

    /// Cancels the statement that the sessions registered under `lease` run now (the task's own
    /// connections), never those in `slotSessions` (the worker's slot sessions, shared by the
    /// tasks of a batch and its bookkeeping), and that of `slotPID` (the attempt's connection,
    /// while the task's own code runs on it). A session between statements is left alone: the
    /// task's next `checkDeadline` stops it.
    @discardableResult
    public func cancelStatements(_ lease: Lease, slotPID: Int32?, slotSessions: [Int32]) throws -> Int {
        try pg.query(
            """
            SELECT count(pg_cancel_backend(x.pid)) FROM (
              SELECT a.pid FROM \(s).task_instance t
              CROSS JOIN LATERAL unnest(t.lease_pids, t.lease_pid_starts) AS b(pid, started)
              JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.started
              WHERE t.run_id = $1 AND t.task_id = $2 AND t.try_number = $3 AND t.lease_epoch = $4
                AND t.state = 'running' AND a.state = 'active' AND a.pid <> pg_backend_pid()
                AND a.pid IS DISTINCT FROM $5::int AND a.pid <> ALL($6::int[])
              UNION SELECT $5::int WHERE $5::int IS NOT NULL
            ) x
            """,
            [
                lease.key.run, lease.key.task, lease.key.tryNumber, lease.epoch, slotPID.map { Int($0) },
                PostgresArray(slotSessions.map { String($0) }),
            ]
        ).first.map { try $0.decode(Int.self, 0) } ?? 0
    }
}
