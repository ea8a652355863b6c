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

    /// Worker side: the attempt starts. False when this attempt is no longer the current one or
    /// already finished (a redelivered or stale message): the caller acknowledges without running.
    public func startAttempt(run: Int64, task: String, tryNumber: Int, worker: String) throws -> Bool {
        try !startAttempts([AttemptKey(run: run, task: task, tryNumber: tryNumber)], worker: worker).isEmpty
    }

    /// Starts several attempts in one statement (one round trip, one commit); returns the
    /// positions in `keys` that started. The others are finished or superseded: acknowledge them
    /// without running. Only the first gets its start time now: the others wait behind it, and
    /// `finishAttempts` records when they really started. Starting again an attempt this same
    /// worker already started (a batch cut in two) changes only its start time.
    public func startAttempts(_ keys: [AttemptKey], worker: String) throws -> Set<Int> {
        guard !keys.isEmpty else { return [] }
        let rows = try pg.query(
            """
            WITH input AS (
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) WITH ORDINALITY AS i(run_id, task_id,
                  try_number, n)
            ), ti AS (
              UPDATE \(s).task_instance t SET state = 'running', worker = $4, started_at = CASE WHEN i.n = 1 THEN
                  clock_timestamp() END
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number AND t.state IN
                  ('queued', 'running')
              RETURNING t.run_id, t.task_id, t.try_number, i.n
            ), attempt AS (
              INSERT INTO \(s).task_attempt (run_id, task_id, try_number, worker, state, started_at)
              SELECT run_id, task_id, try_number, $4, 'running', clock_timestamp() FROM ti
              ON CONFLICT (run_id, task_id, try_number) DO UPDATE SET worker = EXCLUDED.worker, started_at =
                  clock_timestamp(),
                state = 'running',
                log = CASE WHEN \(s).task_attempt.worker = EXCLUDED.worker AND \(s).task_attempt.state = 'running' THEN
                    \(s).task_attempt.log
                           ELSE \(s).task_attempt.log || E'\\n--- delivered again to ' || EXCLUDED.worker || E' ---\\n'
                               END
              RETURNING 1
            ), run AS (
              UPDATE \(s).dag_run SET state = 'running', started_at = coalesce(started_at, clock_timestamp())
              WHERE run_id IN (SELECT run_id FROM ti) AND state = 'queued' RETURNING 1
            )
            SELECT n FROM ti
            """,
            [
                PostgresArray(keys.map { String($0.run) }), PostgresArray(keys.map(\.task)),
                PostgresArray(keys.map { String($0.tryNumber) }), worker,
            ], planEachTime: keys.count > Self.smallBatch
        ).rows
        return Set(try rows.map { try $0.decode(Int.self, 0) - 1 })
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
        public init(
            key: AttemptKey, state: TaskState, error: String?, retryAt: Date?, log: String, startedAt: Date? = nil
        ) {
            self.key = key
            self.state = state
            self.error = error
            self.retryAt = retryAt
            self.log = log
            self.startedAt = startedAt
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
                  $7::text[], $8::timestamptz[])
                WITH ORDINALITY AS i(run_id, task_id, try_number, state, error, next_try_at, log, started_at, n)
            ), ti AS (
              UPDATE \(s).task_instance t SET state = i.state, ended_at = clock_timestamp(), error = i.error,
                  next_try_at = i.next_try_at,
                started_at = coalesce(t.started_at, i.started_at, clock_timestamp())
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number AND t.state =
                  'running'
              RETURNING i.n, t.started_at
            ), attempt AS (
              UPDATE \(s).task_attempt a SET state = CASE WHEN i.n IN (SELECT n FROM ti) THEN i.state ELSE 'superseded'
                  END,
                started_at = coalesce((SELECT ti.started_at FROM ti WHERE ti.n = i.n), a.started_at),
                ended_at = clock_timestamp(), error = i.error, log = a.log || i.log
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
                  max_tries = try_number + (max_tries - least(try_number, max_tries)) + 1
                WHERE run_id = $1 AND task_id = ANY($2::text[]) AND state NOT IN ('queued', 'running')
                """, [run, PostgresArray(tasks.sorted())]
            ).affectedRows
            if n > 0 {
                // Reopened as queued: the scheduler admits it under the DAG's max active runs.
                try tx.query("UPDATE \(s).dag_run SET state = 'queued', ended_at = NULL WHERE run_id = $1", [run])
            }
            return n
        }
    }
}
