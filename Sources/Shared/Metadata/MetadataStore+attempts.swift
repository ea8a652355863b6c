import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// Attempts as workers start and end them (fenced by try number), and clearing for a rerun.
extension MetadataStore {
    /// One attempt of one task: what a task message names.
    public struct AttemptKey: Sendable, Hashable {
        public let run: Int64
        public let task: String
        public let tryNumber: Int
        public init(run: Int64, task: String, tryNumber: Int) {
            self.run = run
            self.task = task
            self.tryNumber = tryNumber
        }
    }

    /// Worker side: the attempt starts (tests and tools; workers use `startAttempts`). False when
    /// this attempt is no longer the current one, already finished, or held by a live runner.
    public func startAttempt(run: Int64, task: String, tryNumber: Int, worker: String) throws -> Bool {
        let out = try startAttempts(
            [AttemptKey(run: run, task: task, tryNumber: tryNumber)], worker: worker, runner: worker)
        if case .started = out.first { return true }
        return false
    }

    /// What became of one message's attempt at its start.
    public enum StartOutcome: Sendable, Equatable {
        /// This runner holds the attempt's lease now, under `epoch`: run it.
        case started(epoch: Int64)
        /// Finished already, or superseded by a newer try: acknowledge without running.
        case notCurrent
        /// Running under another runner's live lease (a duplicate delivery: a reclaim after a
        /// Redis outage, a re-enqueued message): acknowledge without running; that runner ends it,
        /// and should it die, its expired lease makes the scheduler enqueue the attempt again.
        case heldElsewhere
        /// Started by `limit` runners already, each of which died or was cut off: taken under
        /// `epoch` only to be failed, and its message dead-lettered.
        case exhausted(epoch: Int64, deliveries: Int)
    }

    /// Starts several attempts of one runner (a worker slot of one process) in one statement;
    /// returns what became of each key, in order.
    ///
    /// The lease: an attempt that is queued, or running under this same runner, or running under a
    /// lease that expired on Postgres's clock, is taken: the runner and its backend are recorded,
    /// the expiry set `ttl` seconds ahead, and the epoch raised when the runner changes. Before an
    /// expired lease is taken, the backends its old runner registered are ended
    /// (`pg_terminate_backend`), so that a frozen or cut-off runner's locks and open transactions go
    /// at once and its later statements fail; a runner can neither renew nor register a backend
    /// under an expired lease, so nothing of it survives the take-over. The `limit`-th take-over of
    /// one try comes back `exhausted`.
    ///
    /// Only the first gets its start time now: the others wait behind it, and `finishAttempts`
    /// records when they really started.
    public func startAttempts(
        _ keys: [AttemptKey], worker: String, runner: String, ttl: Double = 10, limit: Int = 5
    ) throws -> [StartOutcome] {
        guard !keys.isEmpty else { return [] }
        let arrays: [any PostgresEncodable] = [
            PostgresArray(keys.map { String($0.run) }), PostgresArray(keys.map(\.task)),
            PostgresArray(keys.map { String($0.tryNumber) }),
        ]
        // First end the backends behind expired leases held by others (outside any row lock: a
        // frozen runner may hold the row itself, in a transaction it will never end).
        try pg.query(
            """
            SELECT count(pg_terminate_backend(a.pid, 5000))
            FROM unnest($1::bigint[], $2::text[], $3::int[]) AS i(run_id, task_id, try_number)
            JOIN \(s).task_instance t USING (run_id, task_id, try_number)
            CROSS JOIN LATERAL unnest(t.lease_pids, t.lease_pid_starts) AS b(pid, started)
            JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.started
            WHERE t.state = 'running' AND t.lease_runner IS DISTINCT FROM $4
              AND coalesce(t.lease_expires_at < clock_timestamp(), true) AND a.pid <> pg_backend_pid()
            """, arrays + [runner], planEachTime: keys.count > Self.smallBatch)
        let rows = try pg.query(
            """
            WITH input AS (
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) WITH ORDINALITY AS i(run_id, task_id,
                  try_number, n)
            ), me AS (
              SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
            ), cur AS (
              SELECT t.run_id, t.task_id, t.try_number, i.n,
                t.state = 'running' AND t.lease_runner = $5 AS mine,
                -- An attempt asked to stop is taken by nobody else (the scheduler ends it, if its
                -- runner does not); its own runner starting it again records it cancelled.
                t.state = 'queued' OR (t.state = 'running' AND (t.lease_runner IS NULL OR t.lease_runner = $5
                    OR coalesce(t.lease_expires_at < clock_timestamp(), true))
                    AND (t.cancel_requested_at IS NULL OR t.lease_runner = $5)) AS takeable,
                t.state = 'running' AS was_running, t.lease_pids AS old_pids, t.lease_pid_starts AS old_starts,
                CASE WHEN t.lease_try = t.try_number THEN t.lease_deliveries ELSE 0 END AS deliveries
              FROM \(s).task_instance t JOIN input i USING (run_id, task_id, try_number)
              WHERE t.state IN ('queued', 'running')
              -- In key order, as mark-failed takes them: no lock cycle between the two.
              ORDER BY t.run_id, t.task_id
              FOR UPDATE OF t
            ), ti AS (
              UPDATE \(s).task_instance t SET state = 'running', worker = $4,
                -- Started again by its own runner (a round cut short): it keeps its start time.
                started_at = CASE WHEN c.mine AND t.started_at IS NOT NULL THEN t.started_at
                    WHEN c.n = 1 THEN clock_timestamp() END,
                lease_runner = $5,
                lease_epoch = t.lease_epoch + CASE WHEN c.mine THEN 0 ELSE 1 END,
                lease_try = t.try_number,
                lease_deliveries = c.deliveries + CASE WHEN c.mine THEN 0 ELSE 1 END,
                -- From the time the row was locked (it may have waited), not the statement's start.
                lease_expires_at = clock_timestamp() + make_interval(secs => $6),
                lease_pids = CASE WHEN c.mine THEN t.lease_pids ELSE '{}' END || (SELECT pid FROM me),
                lease_pid_starts = CASE WHEN c.mine THEN t.lease_pid_starts ELSE '{}' END
                    || (SELECT backend_start FROM me)
              FROM cur c
              WHERE t.run_id = c.run_id AND t.task_id = c.task_id AND c.takeable
              RETURNING t.run_id, t.task_id, t.try_number, c.n, t.lease_epoch, t.lease_deliveries
            ), attempt AS (
              INSERT INTO \(s).task_attempt (run_id, task_id, try_number, worker, state, started_at)
              SELECT run_id, task_id, try_number, $4, 'running', clock_timestamp() FROM ti
              ON CONFLICT (run_id, task_id, try_number) DO UPDATE SET worker = EXCLUDED.worker, started_at =
                  clock_timestamp(),
                state = 'running',
                log = CASE WHEN \(s).task_attempt.worker = EXCLUDED.worker AND \(s).task_attempt.state = 'running' THEN
                    -- Lines it wrote before its round was rolled back stay (live logs): say it starts over.
                    \(s).task_attempt.log || CASE WHEN \(s).task_attempt.log <> ''
                        THEN E'--- its round was rolled back; started again by the same worker ---\\n' ELSE '' END
                           ELSE \(s).task_attempt.log || E'\\n--- delivered again to ' || EXCLUDED.worker || E' ---\\n'
                               END
              RETURNING 1
            ), run AS (
              UPDATE \(s).dag_run SET state = 'running', started_at = coalesce(started_at, clock_timestamp())
              WHERE run_id IN (SELECT run_id FROM ti) AND state = 'queued' RETURNING 1
            ), ended AS (
              -- Backends registered under a lease taken over here, after the first statement read the
              -- list (a connection of the old runner registering just before it expired).
              SELECT count(pg_terminate_backend(a.pid, 5000)) AS killed
              FROM cur c CROSS JOIN LATERAL unnest(c.old_pids, c.old_starts) AS b(pid, started)
              JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.started
              WHERE c.takeable AND c.was_running AND NOT c.mine AND a.pid <> pg_backend_pid()
            )
            SELECT n, lease_epoch, lease_deliveries, true FROM ti, ended
            UNION ALL SELECT n, 0, 0, false FROM cur WHERE NOT takeable
            """,
            arrays + [worker, runner, ttl], planEachTime: keys.count > Self.smallBatch
        ).rows
        var out = [StartOutcome](repeating: .notCurrent, count: keys.count)
        for r in rows {
            let i = try r.decode(Int.self, 0) - 1
            guard try r.decode(Bool.self, 3) else {
                out[i] = .heldElsewhere
                continue
            }
            let epoch = try r.decode(Int64.self, 1)
            let deliveries = try r.decode(Int.self, 2)
            out[i] = deliveries > limit ? .exhausted(epoch: epoch, deliveries: deliveries - 1) : .started(epoch: epoch)
        }
        return out
    }

    /// One runner's hold on one attempt.
    public struct Lease: Sendable, Hashable {
        public let key: AttemptKey
        public let epoch: Int64
        public init(key: AttemptKey, epoch: Int64) {
            self.key = key
            self.epoch = epoch
        }
    }

    /// Pushes the expiry of `leases` `ttl` seconds past Postgres's now, for those still held under
    /// their epoch and not expired (an expired lease is never revived: another runner may be
    /// ending its backends). Returns the leases renewed, those of them an operator asked to stop
    /// (with who asked), and Postgres's clock.
    public func renewLeases(
        _ leases: [Lease], ttl: Double
    ) throws -> (renewed: Set<Lease>, cancel: [Lease: String], now: Date) {
        let rows = try pg.query(
            """
            WITH input AS (
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[]) AS i(run_id, task_id,
                  try_number, epoch)
            ), renewed AS (
              UPDATE \(s).task_instance t SET lease_expires_at = clock_timestamp() + make_interval(secs => $5)
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number
                AND t.lease_epoch = i.epoch AND t.state = 'running' AND t.lease_expires_at >= clock_timestamp()
              RETURNING t.run_id, t.task_id, t.try_number, t.lease_epoch,
                CASE WHEN t.cancel_requested_at IS NOT NULL THEN coalesce(t.cancel_requested_by, 'an operator') END
                    AS cancel_by
            )
            SELECT run_id, task_id, try_number, lease_epoch, clock_timestamp(), cancel_by FROM renewed
            UNION ALL SELECT NULL, NULL, NULL, NULL, clock_timestamp(), NULL
            """,
            [
                PostgresArray(leases.map { String($0.key.run) }), PostgresArray(leases.map(\.key.task)),
                PostgresArray(leases.map { String($0.key.tryNumber) }), PostgresArray(leases.map { String($0.epoch) }),
                ttl,
            ], planEachTime: leases.count > Self.smallBatch
        ).rows
        var renewed = Set<Lease>()
        var cancel: [Lease: String] = [:]
        var now = Date()
        for r in rows {
            now = try r.decode(Date.self, 4)
            guard let run = try r.decode(Int64?.self, 0) else { continue }
            let lease = Lease(
                key: AttemptKey(run: run, task: try r.decode(String.self, 1), tryNumber: try r.decode(Int.self, 2)),
                epoch: try r.decode(Int64.self, 3))
            renewed.insert(lease)
            if let by = try r.decode(String?.self, 5) { cancel[lease] = by }
        }
        return (renewed, cancel, now)
    }

    /// Ends `leases` now (a worker handing its tasks back after its grace, or a slot's tasks waiting
    /// behind a long one): other runners take the attempts over at once. `forgetBackends`: the
    /// backends recorded under them are not ended by the take-over (they are the slot's own
    /// session, which goes on running the long task), and the runner is forgotten.
    public func expireLeases(_ leases: [Lease], forgetBackends: Bool = false) throws {
        guard !leases.isEmpty else { return }
        try pg.query(
            """
            UPDATE \(s).task_instance t SET lease_expires_at = clock_timestamp() - interval '1 second',
              lease_pids = CASE WHEN $5 THEN '{}' ELSE t.lease_pids END,
              -- Nor is it this runner's any more: started again by it, it is a new delivery (a new
              -- epoch), which the hand-back's uncounted one makes up for.
              lease_runner = CASE WHEN $5 THEN NULL ELSE t.lease_runner END,
              lease_pid_starts = CASE WHEN $5 THEN '{}' ELSE t.lease_pid_starts END,
              -- Handed back, not lost: the take-over that follows does not count as a delivery.
              lease_deliveries = greatest(t.lease_deliveries - 1, 0)
            FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[]) AS i(run_id, task_id, try_number, epoch)
            WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number
              AND t.lease_epoch = i.epoch AND t.state = 'running'
            """,
            [
                PostgresArray(leases.map { String($0.key.run) }), PostgresArray(leases.map(\.key.task)),
                PostgresArray(leases.map { String($0.key.tryNumber) }), PostgresArray(leases.map { String($0.epoch) }),
                forgetBackends,
            ], planEachTime: true)
    }

    /// Thrown where a runner finds its lease gone: taken over after it expired, or the attempt
    /// ended by the scheduler or an operator (timeout, clear, mark failed).
    public struct LeaseLost: Error, CustomStringConvertible {
        public let lease: Lease
        public init(lease: Lease) { self.lease = lease }
        public var description: String {
            "the lease of \(lease.key.task) (run \(lease.key.run), try \(lease.key.tryNumber), epoch \(lease.epoch)) "
                + "is no longer this runner's: another runner took it over after it expired, or the attempt was "
                + "ended (timeout, clear, mark failed); this runner stops"
        }
    }

    /// Records the backend of `conn` (a connection of the task's own) under `lease`, so a take-over
    /// ends it too; throws `LeaseLost` when the lease is no longer held (then nothing may be written
    /// through this connection: a task's connection calls this on every connect and reconnect).
    public func registerBackend(_ lease: Lease, on conn: PostgresConnection) throws {
        let n = try conn.query(
            """
            UPDATE \(s).task_instance SET lease_pids = lease_pids || pg_backend_pid(),
              lease_pid_starts = lease_pid_starts
                || (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
            WHERE run_id = $1 AND task_id = $2 AND try_number = $3 AND lease_epoch = $4 AND state = 'running'
              AND lease_expires_at >= clock_timestamp()
            """, [lease.key.run, lease.key.task, lease.key.tryNumber, lease.epoch]
        ).affectedRows
        if n == 0 { throw LeaseLost(lease: lease) }
    }

    /// Ends the backends registered under the lease of `task`'s current attempt (after the scheduler
    /// or an operator ended the attempt: a superseded runner stops instead of running on) and
    /// forgets them. Returns how many were ended.
    @discardableResult
    public func endLeaseBackends(run: Int64, task: String, tryNumber: Int) throws -> Int {
        try pg.query(
            """
            WITH t AS (
              UPDATE \(s).task_instance n SET lease_pids = '{}', lease_pid_starts = '{}', lease_expires_at = NULL
              FROM \(s).task_instance o
              WHERE n.run_id = $1 AND n.task_id = $2 AND n.try_number = $3 AND n.state = 'running'
                AND o.run_id = n.run_id AND o.task_id = n.task_id
              RETURNING o.lease_pids, o.lease_pid_starts
            )
            SELECT count(pg_terminate_backend(a.pid, 5000))
            FROM t CROSS JOIN LATERAL unnest(t.lease_pids, t.lease_pid_starts) AS b(pid, started)
            JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.started
            WHERE a.pid <> pg_backend_pid()
            """, [run, task, tryNumber]
        ).first.map { try $0.decode(Int.self, 0) } ?? 0
    }

    /// Running attempts whose lease expired more than `grace` seconds ago on Postgres's clock (rows
    /// started before leases existed, without a runner, are left to their timeout): their
    /// runner died, froze or was cut off, and no live worker took the message over (it is gone, or
    /// pending under a consumer whose worker still heartbeats to Redis). The scheduler enqueues
    /// them again; the worker that takes the copy takes the lease over.
    public func expiredLeases(grace: Double) throws -> [EnqueuedAttempt] {
        try attempts(
            """
            -- (A handed-back lease has no runner any more, but an expiry.)
            -- (One asked to stop is ended by the scheduler instead: see overdueCancels.)
            t.state = 'running' AND t.lease_expires_at < clock_timestamp() - make_interval(secs => $1)
              AND t.cancel_requested_at IS NULL
            """, [grace])
    }

    /// Appends `chunk` to the log of a running attempt whose row names `worker` (a worker slot):
    /// the lines a task logged so far, written while it runs. False when the attempt is not running
    /// there any more (ended, or taken over): the runner keeps the lines for its end's record.
    public func appendLog(_ key: AttemptKey, worker: String, _ chunk: String) throws -> Bool {
        try pg.query(
            """
            UPDATE \(s).task_attempt SET log = log || $5
            WHERE run_id = $1 AND task_id = $2 AND try_number = $3 AND worker = $4 AND state = 'running'
            """,
            // Postgres text cannot hold NUL (a parameter would end there): U+FFFD, as in arrays.
            [key.run, key.task, key.tryNumber, worker, chunk.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}")]
        ).affectedRows == 1
    }

    /// How an attempt ended.
    public struct AttemptEnd: Sendable {
        public let key: AttemptKey
        public let state: TaskState
        public let error: String?
        public let retryAt: Date?
        public let log: String
        /// When the task really started, for attempts that waited in a batch (their start
        /// statement left the time unset, so a timeout never counts the wait).
        public let startedAt: Date?
        /// The lease epoch the runner holds: the end is refused when the attempt was taken over
        /// since (nil: the scheduler or an operator ends it, whoever runs it).
        public let epoch: Int64?
        public init(
            key: AttemptKey, state: TaskState, error: String?, retryAt: Date?, log: String, startedAt: Date? = nil,
            epoch: Int64? = nil
        ) {
            self.key = key
            self.state = state
            self.error = error
            self.retryAt = retryAt
            self.log = log
            self.startedAt = startedAt
            self.epoch = epoch
        }
    }

    /// Ends an attempt that is still running: `success`, or a failure that becomes `up_for_retry`
    /// (with `retryAt`) or `failed`. False when the attempt was superseded (timed out, cleared, or
    /// a newer try exists), so a late worker never overwrites a newer state. `on` lets a task
    /// commit its ETL writes together with its success.
    @discardableResult
    public func finishAttempt(
        run: Int64, task: String, tryNumber: Int, state: TaskState, error: String?,
        retryAt: Date?, log: String, on conn: PostgresConnection? = nil
    ) throws -> Bool {
        let end = AttemptEnd(
            key: AttemptKey(run: run, task: task, tryNumber: tryNumber), state: state, error: error, retryAt: retryAt,
            log: log)
        return try !finishAttempts([end], on: conn).isEmpty
    }

    /// Ends several attempts in one statement; returns the positions in `ends` that were still
    /// running (the others were superseded: their attempt rows say so, their task rows are left).
    public func finishAttempts(_ ends: [AttemptEnd], on conn: PostgresConnection? = nil) throws -> Set<Int> {
        guard !ends.isEmpty else { return [] }
        let c = conn ?? pg
        let rows = try c.query(
            """
            WITH input AS (
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[],
                  $7::text[], $8::timestamptz[], $9::bigint[])
                WITH ORDINALITY AS i(run_id, task_id, try_number, state, error, next_try_at, log, started_at, epoch, n)
            ), cancel AS (
              -- A failure of an attempt an operator asked to stop is its cancel, never a retry: whatever
              -- the interruption made it throw, however it ended (its worker, a timeout).
              SELECT i.n, 'cancelled by ' || coalesce(t.cancel_requested_by, 'an operator')
                  || coalesce(' (' || left(split_part(i.error, E'\\n', 1), 300) || ')', '') AS error
              FROM input i JOIN \(s).task_instance t USING (run_id, task_id, try_number)
              WHERE t.cancel_requested_at IS NOT NULL AND i.state IN ('failed', 'up_for_retry')
            ), ti AS (
              UPDATE \(s).task_instance t SET
                state = CASE WHEN i.n IN (SELECT n FROM cancel) THEN 'cancelled' ELSE i.state END,
                ended_at = clock_timestamp(),
                error = coalesce((SELECT c.error FROM cancel c WHERE c.n = i.n), i.error),
                next_try_at = CASE WHEN i.n IN (SELECT n FROM cancel) THEN NULL ELSE i.next_try_at END,
                started_at = coalesce(t.started_at, i.started_at, clock_timestamp()),
                lease_expires_at = NULL, lease_pids = '{}', lease_pid_starts = '{}'
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number AND t.state =
                  'running' AND (i.epoch IS NULL OR t.lease_epoch = i.epoch)
              RETURNING i.n, t.started_at
            ), taken AS (
              -- Ends refused because another runner took the lease over and runs the try now: that
              -- runner's attempt row keeps its state; the old runner's log is appended, marked.
              SELECT i.n FROM input i JOIN \(s).task_instance t USING (run_id, task_id, try_number)
              WHERE i.epoch IS NOT NULL AND t.lease_epoch <> i.epoch
            ), attempt AS (
              UPDATE \(s).task_attempt a SET state = CASE WHEN i.n IN (SELECT n FROM cancel)
                    AND i.n IN (SELECT n FROM ti) THEN 'cancelled' WHEN i.n IN (SELECT n FROM ti) THEN i.state
                    WHEN i.n IN (SELECT n FROM taken) THEN a.state ELSE 'superseded' END,
                started_at = coalesce((SELECT ti.started_at FROM ti WHERE ti.n = i.n), a.started_at),
                ended_at = CASE WHEN i.n IN (SELECT n FROM taken) THEN a.ended_at ELSE clock_timestamp() END,
                error = CASE WHEN i.n IN (SELECT n FROM taken) THEN a.error
                    ELSE coalesce((SELECT c.error FROM cancel c WHERE c.n = i.n AND c.n IN (SELECT n FROM ti)), i.error)
                    END,
                log = a.log || CASE WHEN i.n IN (SELECT n FROM taken) THEN
                    E'--- the end of a runner whose lease was taken over (refused); its log: ---\\n' ELSE '' END
                    || i.log
              FROM input i
              WHERE a.run_id = i.run_id AND a.task_id = i.task_id AND a.try_number = i.try_number
              RETURNING 1
            )
            SELECT n FROM ti
            """,
            [
                PostgresArray(ends.map { String($0.key.run) }), PostgresArray(ends.map(\.key.task)),
                PostgresArray(ends.map { String($0.key.tryNumber) }), PostgresArray(ends.map(\.state.rawValue)),
                PostgresArray(ends.map(\.error)),
                PostgresArray(ends.map { $0.retryAt.map(PostgresTimestamp.format) }),
                PostgresArray(ends.map(\.log)),
                PostgresArray(ends.map { $0.startedAt.map(PostgresTimestamp.format) }),
                PostgresArray(ends.map { $0.epoch.map(String.init) }),
            ],
            planEachTime: ends.count > Self.smallBatch
        ).rows
        return Set(try rows.map { try $0.decode(Int.self, 0) - 1 })
    }

    /// Resets failed (and upstream-failed) tasks of a run, and everything downstream of them, to
    /// `scheduled`, and reopens the run. Returns the tasks reset.
    public func clear(run: Int64, tasks: Set<String>) throws -> Int {
        guard !tasks.isEmpty else { return 0 }
        return try pg.transaction { tx in
            let n = try tx.query(
                """
                UPDATE \(s).task_instance SET state = 'scheduled', next_try_at = NULL, error = NULL, ended_at = NULL,
                  cancel_requested_at = NULL, cancel_requested_by = NULL,
                  max_tries = try_number + (max_tries - least(try_number, max_tries)) + 1
                WHERE run_id = $1 AND task_id = ANY($2::text[]) AND state NOT IN ('queued', 'running')
                """, [run, PostgresArray(tasks.sorted())]
            ).affectedRows
            if n > 0 {
                // Reopened as queued: the scheduler admits it under the DAG's max active runs.
                try tx.query(
                    "UPDATE \(s).dag_run SET state = 'queued', ended_at = NULL, waiting_since = NULL WHERE run_id = $1",
                    [run])
            }
            return n
        }
    }
}
