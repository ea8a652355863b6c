import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// The truth about DAGs, runs and task instances, in Postgres. Every state change is one
/// conditional UPDATE, so that two processes racing (a redelivered message, a late worker, a
/// second scheduler) cannot both win: the condition names the attempt (`try_number`) and the
/// state it must still be in.
public final class MetadataStore {
    public let pg: PostgresConnection
    /// The schema holding the tables (`etl`; tests use their own).
    public let schema: String

    public init(pg: PostgresConnection, schema: String = "etl") {
        self.pg = pg
        self.schema = schema
    }

    private var s: String { schema }

    // MARK: DAGs

    /// Records the DAGs this build defines: new ones start paused unless told otherwise.
    public func sync(dags: [DAG]) throws {
        for d in dags {
            try pg.query(
                """
                INSERT INTO \(s).dag (dag_id, is_paused, schedule, tags) VALUES ($1, $2, $3, $4)
                ON CONFLICT (dag_id) DO UPDATE SET schedule = EXCLUDED.schedule, tags = EXCLUDED.tags, last_seen = now()
                """,
                [
                    d.id, d.pausedOnCreation, d.schedule.description,
                    "{" + d.tags.map { "\"\($0)\"" }.joined(separator: ",") + "}",
                ])
        }
    }

    public func pausedDAGs() throws -> Set<String> {
        Set(try pg.query("SELECT dag_id FROM \(s).dag WHERE is_paused").rows.map { try $0.decode(String.self, 0) })
    }

    /// Pauses or unpauses; false when no such DAG is recorded.
    @discardableResult
    public func setPaused(_ dag: String, _ paused: Bool) throws -> Bool {
        try pg.query("UPDATE \(s).dag SET is_paused = $2 WHERE dag_id = $1", [dag, paused]).affectedRows == 1
    }

    // MARK: Runs

    /// Creates a run with every task `scheduled`; nil if the DAG already has a run for that date.
    @discardableResult
    public func createRun(_ dag: DAG, logicalDate: Date, type: RunType) throws -> Int64? {
        let run = try pg.transaction { tx -> Int64? in
            guard
                let row = try tx.query(
                    """
                    INSERT INTO \(s).dag_run (dag_id, logical_date, run_type, state) VALUES ($1, $2, $3, 'queued')
                    ON CONFLICT (dag_id, logical_date) DO NOTHING RETURNING run_id
                    """, [dag.id, logicalDate, type.rawValue]
                ).first
            else { return nil }
            let runID = try row.decode(Int64.self, 0)
            // Every task in one statement: a 20,000-task run is one round trip, not 20,000.
            try tx.query(
                """
                INSERT INTO \(s).task_instance (run_id, task_id, state, max_tries, queue)
                SELECT $1, task_id, 'scheduled', max_tries, queue FROM unnest($2::text[], $3::int[], $4::text[]) AS i(task_id, max_tries, queue)
                """,
                [
                    runID, Self.arrayLiteral(dag.tasks.map(\.id)),
                    Self.arrayLiteral(dag.tasks.map { String($0.retries + 1) }),
                    Self.arrayLiteral(dag.tasks.map(\.queue)),
                ])
            return runID
        }
        // A big run changes the table's make-up at once, long before autovacuum notices: fresh
        // statistics keep the scheduler's and workers' lookups by key on the primary key (with a
        // run of 60,000 tasks unseen, the planner read the whole run for each chunk of 500).
        if run != nil && dag.tasks.count >= 1000 { try pg.query("ANALYZE \(s).task_instance") }
        return run
    }

    /// The newest scheduled logical date of every DAG that has one.
    public func lastScheduledLogicalDates() throws -> [String: Date] {
        try pg.query("SELECT dag_id, max(logical_date) FROM \(s).dag_run WHERE run_type = 'scheduled' GROUP BY dag_id")
            .rows.reduce(into: [String: Date]()) { m, r in m[try r.decode(String.self, 0)] = try r.decode(Date.self, 1)
            }
    }

    public func lastScheduledLogicalDate(_ dag: String) throws -> Date? {
        try pg.query("SELECT max(logical_date) FROM \(s).dag_run WHERE dag_id = $1 AND run_type = 'scheduled'", [dag])
            .rows[0].decode(Date?.self, 0)
    }

    public struct Run: Sendable {
        public let id: Int64
        public let dag: String
        public let logicalDate: Date
        public let state: RunState
    }

    public func activeRuns() throws -> [Run] {
        try pg.query(
            "SELECT run_id, dag_id, logical_date, state FROM \(s).dag_run WHERE state IN ('queued', 'running') ORDER BY run_id"
        )
        .rows.map {
            Run(
                id: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                logicalDate: try $0.decode(Date.self, 2), state: try MetadataStore.runState($0, 3))
        }
    }

    public func run(_ id: Int64) throws -> Run? {
        try pg.query("SELECT run_id, dag_id, logical_date, state FROM \(s).dag_run WHERE run_id = $1", [id])
            .rows.first.map {
                Run(
                    id: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                    logicalDate: try $0.decode(Date.self, 2), state: try MetadataStore.runState($0, 3))
            }
    }

    /// True when every DAG in `upstream` has a successful run for `logicalDate`.
    public func upstreamDAGsSucceeded(_ upstream: [String], logicalDate: Date) throws -> Bool {
        guard !upstream.isEmpty else { return true }
        let n = try pg.query(
            """
            SELECT count(DISTINCT dag_id) FROM \(s).dag_run WHERE dag_id = ANY($1::text[]) AND logical_date = $2 AND state = 'success'
            """, ["{" + upstream.joined(separator: ",") + "}", logicalDate]
        ).rows[0].decode(Int.self, 0)
        return n == upstream.count
    }

    public func setRunState(_ run: Int64, _ state: RunState) throws {
        let ended = state.isFinished
        try pg.query(
            """
            UPDATE \(s).dag_run SET state = $2,
              started_at = CASE WHEN $2 = 'running' AND started_at IS NULL THEN now() ELSE started_at END,
              ended_at = CASE WHEN $3 THEN now() ELSE NULL END
            WHERE run_id = $1 AND state <> $2
            """, [run, state.rawValue, ended])
    }

    // MARK: Task instances

    public struct Instance: Sendable {
        public let task: String
        public let state: TaskState
        public let tryNumber: Int
        public let maxTries: Int
        public let startedAt: Date?
        public let nextTryAt: Date?
        public let messageID: String?
    }

    public func instances(run: Int64) throws -> [String: Instance] {
        var out: [String: Instance] = [:]
        for r in try pg.query(
            """
            SELECT task_id, state, try_number, max_tries, started_at, next_try_at, message_id FROM \(s).task_instance WHERE run_id = $1
            """, [run]
        ).rows {
            let id = try r.decode(String.self, 0)
            out[id] = Instance(
                task: id, state: TaskState(rawValue: try r.decode(String.self, 1)) ?? .failed,
                tryNumber: try r.decode(Int.self, 2), maxTries: try r.decode(Int.self, 3),
                startedAt: try r.decode(Date?.self, 4), nextTryAt: try r.decode(Date?.self, 5),
                messageID: try r.decode(String?.self, 6))
        }
        return out
    }

    /// Moves scheduled (or due retry) tasks of one run to `queued` with a new try number, in one
    /// statement; returns those this call moved (another process may have moved the rest).
    /// Each gets a new message id (a random UUID made by Postgres). The tasks are found by key with
    /// `= ANY`, an index probe per task: a join against an `unnest` of the ids let the planner rescan
    /// the array per row, 20 s of CPU for a run of 20,000 tasks.
    public func markQueued(run: Int64, tasks: [String]) throws -> [(task: String, tryNumber: Int, messageID: String)] {
        guard !tasks.isEmpty else { return [] }
        return try pg.query(
            """
            UPDATE \(s).task_instance t SET state = 'queued', try_number = t.try_number + 1, queued_at = clock_timestamp(),
              message_id = gen_random_uuid()::text, worker = NULL, started_at = NULL, ended_at = NULL, next_try_at = NULL
            WHERE t.run_id = $1 AND t.task_id = ANY($2::text[])
              AND (t.state = 'scheduled' OR (t.state = 'up_for_retry' AND t.next_try_at <= now()))
            RETURNING t.task_id, t.try_number, t.message_id
            """, [run, Self.arrayLiteral(tasks)], planEachTime: tasks.count > Self.smallBatch
        ).rows.map {
            (try $0.decode(String.self, 0), try $0.decode(Int.self, 1), try $0.decode(String.self, 2))
        }
    }

    /// States of some tasks of a run.
    public func states(run: Int64, tasks: [String]) throws -> [String: TaskState] {
        var out: [String: TaskState] = [:]
        for r in try pg.query(
            "SELECT task_id, state FROM \(s).task_instance WHERE run_id = $1 AND task_id = ANY($2::text[])",
            [run, Self.arrayLiteral(tasks)]
        ).rows {
            out[try r.decode(String.self, 0)] = TaskState(rawValue: try r.decode(String.self, 1))
        }
        return out
    }

    /// Nil while some task of the run is unfinished; once all are finished, whether every one
    /// succeeded. It reads the run's rows by key (up to the first unfinished one), so the
    /// scheduler asks only when its events say the run may be done.
    public func allFinished(run: Int64) throws -> Bool? {
        let r = try pg.query(
            """
            SELECT EXISTS (SELECT 1 FROM \(s).task_instance WHERE run_id = $1 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')),
                   NOT EXISTS (SELECT 1 FROM \(s).task_instance WHERE run_id = $1 AND state IN ('failed', 'upstream_failed'))
            """, [run]
        ).rows[0]
        if try r.decode(Bool.self, 0) { return nil }
        return try r.decode(Bool.self, 1)
    }

    /// Running attempts (with their start) and retries that are due, of one run: what the
    /// scheduler's tick must act on between its full passes.
    public func dueWork(run: Int64) throws -> (running: [(task: String, startedAt: Date?)], retriesDue: Int) {
        var running: [(String, Date?)] = []
        var due = 0
        for r in try pg.query(
            """
            SELECT task_id, state, started_at FROM \(s).task_instance
            WHERE run_id = $1 AND (state = 'running' OR (state = 'up_for_retry' AND next_try_at <= now()))
            """, [run]
        ).rows {
            if try r.decode(String.self, 1) == "running" {
                running.append((try r.decode(String.self, 0), try r.decode(Date?.self, 2)))
            } else {
                due += 1
            }
        }
        return (running, due)
    }

    /// Statements over more keys than this are planned for their input each time (a join against
    /// hundreds of keys must not keep a plan made when the tables were empty); smaller ones (a
    /// chain's one task at a time) keep their prepared plan and save the planning time.
    static let smallBatch = 8

    /// A Postgres array literal: each element quoted and escaped, nil as NULL. Cast it to the
    /// element type in SQL (`$1::bigint[]`).
    static func arrayLiteral(_ items: [String?]) -> String {
        var out = "{"
        for (i, item) in items.enumerated() {
            if i > 0 { out += "," }
            guard let item else {
                out += "NULL"
                continue
            }
            out += "\""
            for ch in item.unicodeScalars {
                if ch == "\\" || ch == "\"" { out += "\\" }
                // Postgres text cannot hold NUL, and the parameter would end there: U+FFFD instead.
                out.unicodeScalars.append(ch == "\u{0}" ? "\u{FFFD}" : ch)
            }
            out += "\""
        }
        return out + "}"
    }

    public func markUpstreamFailed(run: Int64, tasks: [String]) throws {
        guard !tasks.isEmpty else { return }
        try pg.query(
            "UPDATE \(s).task_instance SET state = 'upstream_failed', ended_at = now() WHERE run_id = $1 AND task_id = ANY($2::text[]) AND state = 'scheduled'",
            [run, Self.arrayLiteral(tasks)])
    }

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
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) WITH ORDINALITY AS i(run_id, task_id, try_number, n)
            ), ti AS (
              UPDATE \(s).task_instance t SET state = 'running', worker = $4, started_at = CASE WHEN i.n = 1 THEN clock_timestamp() END
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number AND t.state IN ('queued', 'running')
              RETURNING t.run_id, t.task_id, t.try_number, i.n
            ), attempt AS (
              INSERT INTO \(s).task_attempt (run_id, task_id, try_number, worker, state, started_at)
              SELECT run_id, task_id, try_number, $4, 'running', clock_timestamp() FROM ti
              ON CONFLICT (run_id, task_id, try_number) DO UPDATE SET worker = EXCLUDED.worker, started_at = clock_timestamp(),
                state = 'running',
                log = CASE WHEN \(s).task_attempt.worker = EXCLUDED.worker AND \(s).task_attempt.state = 'running' THEN \(s).task_attempt.log
                           ELSE \(s).task_attempt.log || E'\\n--- delivered again to ' || EXCLUDED.worker || E' ---\\n' END
              RETURNING 1
            ), run AS (
              UPDATE \(s).dag_run SET state = 'running', started_at = coalesce(started_at, clock_timestamp())
              WHERE run_id IN (SELECT run_id FROM ti) AND state = 'queued' RETURNING 1
            )
            SELECT n FROM ti
            """,
            [
                Self.arrayLiteral(keys.map { String($0.run) }), Self.arrayLiteral(keys.map(\.task)),
                Self.arrayLiteral(keys.map { String($0.tryNumber) }), worker,
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
              SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::timestamptz[])
                WITH ORDINALITY AS i(run_id, task_id, try_number, state, error, next_try_at, log, started_at, n)
            ), ti AS (
              UPDATE \(s).task_instance t SET state = i.state, ended_at = clock_timestamp(), error = i.error, next_try_at = i.next_try_at,
                started_at = coalesce(t.started_at, i.started_at, clock_timestamp())
              FROM input i
              WHERE t.run_id = i.run_id AND t.task_id = i.task_id AND t.try_number = i.try_number AND t.state = 'running'
              RETURNING i.n, t.started_at
            ), attempt AS (
              UPDATE \(s).task_attempt a SET state = CASE WHEN i.n IN (SELECT n FROM ti) THEN i.state ELSE 'superseded' END,
                started_at = coalesce((SELECT ti.started_at FROM ti WHERE ti.n = i.n), a.started_at),
                ended_at = clock_timestamp(), error = i.error, log = a.log || i.log
              FROM input i
              WHERE a.run_id = i.run_id AND a.task_id = i.task_id AND a.try_number = i.try_number
              RETURNING 1
            )
            SELECT n FROM ti
            """,
            [
                Self.arrayLiteral(ends.map { String($0.key.run) }), Self.arrayLiteral(ends.map(\.key.task)),
                Self.arrayLiteral(ends.map { String($0.key.tryNumber) }), Self.arrayLiteral(ends.map(\.state.rawValue)),
                Self.arrayLiteral(ends.map(\.error)),
                Self.arrayLiteral(ends.map { $0.retryAt.map(PostgresTimestamp.format) }),
                Self.arrayLiteral(ends.map(\.log)),
                Self.arrayLiteral(ends.map { $0.startedAt.map(PostgresTimestamp.format) }),
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
                """, [run, "{" + tasks.sorted().joined(separator: ",") + "}"]
            ).affectedRows
            if n > 0 {
                try tx.query("UPDATE \(s).dag_run SET state = 'running', ended_at = NULL WHERE run_id = $1", [run])
            }
            return n
        }
    }
}

extension MetadataStore {
    /// Takes or renews the scheduler lease for `ttl` seconds. Returns the fencing token when this
    /// holder leads (it grows each time leadership changes hands), nil when another holder does.
    public func acquireLease(holder: String, ttl: Double) throws -> Int64? {
        try pg.query(
            """
            INSERT INTO \(schema).scheduler_lease AS l (name, holder, fencing_token, expires_at)
            VALUES ('scheduler', $1, 1, now() + make_interval(secs => $2))
            ON CONFLICT (name) DO UPDATE SET holder = $1, expires_at = now() + make_interval(secs => $2),
              fencing_token = l.fencing_token + CASE WHEN l.holder = $1 THEN 0 ELSE 1 END
            WHERE l.holder = $1 OR l.expires_at < now()
            RETURNING fencing_token
            """, [holder, ttl]
        ).first.map { try $0.decode(Int64.self, 0) }
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

    /// Queued task instances (with their message id) of active runs.
    public func queuedInstances(
        olderThan seconds: Double = 0
    ) throws -> [(
        run: Int64, dag: String, logicalDate: Date, task: String, tryNumber: Int, queue: String, messageID: String?
    )] {
        try pg.query(
            """
            SELECT t.run_id, r.dag_id, r.logical_date, t.task_id, t.try_number, t.queue, t.message_id
            FROM \(schema).dag_run r JOIN \(schema).task_instance t USING (run_id)
            WHERE r.state IN ('queued', 'running') AND t.state = 'queued' AND t.queued_at < clock_timestamp() - make_interval(secs => $1)
            """, [seconds]
        ).rows.map { r in
            (
                try r.decode(Int64.self, 0), try r.decode(String.self, 1), try r.decode(Date.self, 2),
                try r.decode(String.self, 3),
                try r.decode(Int.self, 4), try r.decode(String.self, 5), try r.decode(String?.self, 6)
            )
        }
    }
}

// MARK: Operator queries (etlctl, web UI)

extension MetadataStore {
    public struct DAGRow: Codable, Sendable {
        public let id: String
        public let paused: Bool
        public let schedule: String
        public let tags: [String]
        enum CodingKeys: String, CodingKey {
            case id = "dag"
            case paused, schedule, tags
        }
    }

    public func dagRows() throws -> [DAGRow] {
        try pg.query(
            "SELECT dag_id, is_paused, schedule, array_to_string(tags, ',') FROM \(schema).dag ORDER BY dag_id"
        ).rows.map {
            DAGRow(
                id: try $0.decode(String.self, 0), paused: try $0.decode(Bool.self, 1),
                schedule: try $0.decode(String.self, 2),
                tags: try $0.decode(String.self, 3).split(separator: ",").map(String.init))
        }
    }

    public struct RunRow: Codable, Sendable {
        public let id: Int64
        public let dag: String
        public let logicalDate: Date
        public let type: RunType
        public let state: RunState
        public let startedAt: Date?
        public let endedAt: Date?
        enum CodingKeys: String, CodingKey {
            case id = "run"
            case dag
            case logicalDate = "logical_date"
            case type, state
            case startedAt = "started_at"
            case endedAt = "ended_at"
        }
    }

    public func runRows(dag: String?, limit: Int) throws -> [RunRow] {
        try pg.query(
            """
            SELECT run_id, dag_id, logical_date, run_type, state, started_at, ended_at FROM \(schema).dag_run
            WHERE $1::text IS NULL OR dag_id = $1 ORDER BY run_id DESC LIMIT $2
            """, [dag, limit]
        ).rows.map(Self.runRow)
    }

    /// One run by id, with its type and timings.
    public func runRow(_ id: Int64) throws -> RunRow? {
        try pg.query(
            "SELECT run_id, dag_id, logical_date, run_type, state, started_at, ended_at FROM \(schema).dag_run WHERE run_id = $1",
            [id]
        )
        .rows.first.map(Self.runRow)
    }

    static func runRow(_ r: PostgresRow) throws -> RunRow {
        RunRow(
            id: try r.decode(Int64.self, 0), dag: try r.decode(String.self, 1), logicalDate: try r.decode(Date.self, 2),
            type: RunType(rawValue: try r.decode(String.self, 3)) ?? .manual, state: try MetadataStore.runState(r, 4),
            startedAt: try r.decode(Date?.self, 5), endedAt: try r.decode(Date?.self, 6))
    }

    public struct TaskRow: Codable, Sendable {
        public let task: String
        public let state: String
        public let tryNumber: Int
        public let maxTries: Int
        public let worker: String?
        public let startedAt: Date?
        public let endedAt: Date?
        public let error: String?
        enum CodingKeys: String, CodingKey {
            case task, state
            case tryNumber = "try"
            case maxTries = "max_tries"
            case worker
            case startedAt = "started_at"
            case endedAt = "ended_at"
            case error
        }
    }

    public func taskRows(run: Int64) throws -> [TaskRow] {
        try pg.query(
            """
            SELECT task_id, state, try_number, max_tries, worker, started_at, ended_at, error FROM \(schema).task_instance
            WHERE run_id = $1 ORDER BY coalesce(started_at, 'infinity'), task_id
            """, [run]
        ).rows.map {
            TaskRow(
                task: try $0.decode(String.self, 0), state: try $0.decode(String.self, 1),
                tryNumber: try $0.decode(Int.self, 2),
                maxTries: try $0.decode(Int.self, 3), worker: try $0.decode(String?.self, 4),
                startedAt: try $0.decode(Date?.self, 5),
                endedAt: try $0.decode(Date?.self, 6), error: try $0.decode(String?.self, 7))
        }
    }

    /// Runs (optionally of one DAG) that have failed or upstream-failed tasks, with those tasks.
    public func failedTasks(dag: String?) throws -> [(run: Int64, dag: String, tasks: [String])] {
        var byRun: [Int64: (String, [String])] = [:]
        for r in try pg.query(
            """
            SELECT t.run_id, r.dag_id, t.task_id FROM \(schema).task_instance t JOIN \(schema).dag_run r USING (run_id)
            WHERE t.state IN ('failed', 'upstream_failed') AND ($1::text IS NULL OR r.dag_id = $1) ORDER BY t.run_id
            """, [dag]
        ).rows {
            let run = try r.decode(Int64.self, 0)
            let dag = try r.decode(String.self, 1)
            let task = try r.decode(String.self, 2)
            byRun[run, default: (dag, [])].1.append(task)
        }
        return byRun.keys.sorted().map { (run: $0, dag: byRun[$0]!.0, tasks: byRun[$0]!.1) }
    }

    public struct AttemptRow: Codable, Sendable {
        public let tryNumber: Int
        public let worker: String?
        public let state: String
        public let error: String?
        public let startedAt: Date
        public let endedAt: Date?
        public let log: String
        enum CodingKeys: String, CodingKey {
            case tryNumber = "try"
            case worker, state, error
            case startedAt = "started_at"
            case endedAt = "ended_at"
            case log
        }
    }

    /// Every attempt of a task in a run, first try first, with its log.
    public func attemptLogs(run: Int64, task: String) throws -> [AttemptRow] {
        try pg.query(
            """
            SELECT try_number, worker, state, error, log, started_at, ended_at FROM \(schema).task_attempt
            WHERE run_id = $1 AND task_id = $2 ORDER BY try_number
            """, [run, task]
        ).rows.map {
            AttemptRow(
                tryNumber: try $0.decode(Int.self, 0), worker: try $0.decode(String?.self, 1),
                state: try $0.decode(String.self, 2),
                error: try $0.decode(String?.self, 3), startedAt: try $0.decode(Date.self, 5),
                endedAt: try $0.decode(Date?.self, 6),
                log: try $0.decode(String.self, 4))
        }
    }

    /// The newest `perDAG` runs of every DAG, newest first within a DAG.
    public func recentRuns(perDAG: Int) throws -> [RunRow] {
        try pg.query(
            """
            SELECT run_id, dag_id, logical_date, run_type, state, started_at, ended_at FROM (
              SELECT *, row_number() OVER (PARTITION BY dag_id ORDER BY run_id DESC) AS n FROM \(schema).dag_run
            ) r WHERE n <= $1 ORDER BY dag_id, run_id DESC
            """, [perDAG]
        ).rows.map(Self.runRow)
    }

    public struct GridCell: Codable, Sendable {
        public let run: Int64
        public let task: String
        public let state: String
        public let tryNumber: Int
        public let startedAt: Date?
        public let endedAt: Date?
        enum CodingKeys: String, CodingKey {
            case run, task, state
            case tryNumber = "try"
            case startedAt = "started_at"
            case endedAt = "ended_at"
        }
    }

    /// The task instances of `runs`: a DAG's grid of runs by task.
    public func taskGrid(runs: [Int64]) throws -> [GridCell] {
        guard !runs.isEmpty else { return [] }
        return try pg.query(
            """
            SELECT run_id, task_id, state, try_number, started_at, ended_at FROM \(schema).task_instance WHERE run_id = ANY($1::bigint[])
            """, ["{" + runs.map(String.init).joined(separator: ",") + "}"]
        ).rows.map {
            GridCell(
                run: try $0.decode(Int64.self, 0), task: try $0.decode(String.self, 1),
                state: try $0.decode(String.self, 2),
                tryNumber: try $0.decode(Int.self, 3), startedAt: try $0.decode(Date?.self, 4),
                endedAt: try $0.decode(Date?.self, 5))
        }
    }

    public struct DelayedRetry: Codable, Sendable {
        public let run: Int64
        public let dag: String
        public let task: String
        public let tryNumber: Int
        public let nextTryAt: Date?
        enum CodingKeys: String, CodingKey {
            case run, dag, task
            case tryNumber = "try"
            case nextTryAt = "next_try_at"
        }
    }

    /// Tasks waiting for their next try, soonest first.
    public func delayedRetries(limit: Int) throws -> [DelayedRetry] {
        try pg.query(
            """
            SELECT t.run_id, r.dag_id, t.task_id, t.try_number, t.next_try_at FROM \(schema).task_instance t JOIN \(schema).dag_run r USING (run_id)
            WHERE t.state = 'up_for_retry' ORDER BY t.next_try_at NULLS LAST LIMIT $1
            """, [limit]
        ).rows.map {
            DelayedRetry(
                run: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                task: try $0.decode(String.self, 2),
                tryNumber: try $0.decode(Int.self, 3), nextTryAt: try $0.decode(Date?.self, 4))
        }
    }

    /// An operator ends a run as failed: its unfinished tasks fail with `reason`, so a queued message
    /// is acknowledged unrun and a running attempt's late completion is refused (as after a
    /// timeout). False when the run had already ended. Clearing its tasks reopens it.
    public func markRunFailed(_ run: Int64, reason: String) throws -> Bool {
        try pg.transaction { tx in
            guard
                try tx.query(
                    "UPDATE \(schema).dag_run SET state = 'failed', ended_at = now() WHERE run_id = $1 AND state IN ('queued', 'running')",
                    [run]
                ).affectedRows == 1
            else { return false }
            try tx.query(
                """
                UPDATE \(schema).task_instance SET state = 'failed', ended_at = now(), error = $2
                WHERE run_id = $1 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')
                """, [run, reason])
            try tx.query(
                "UPDATE \(schema).task_attempt SET state = 'failed', ended_at = now(), error = $2 WHERE run_id = $1 AND state = 'running'",
                [run, reason])
            return true
        }
    }

    /// Task instances by state, over all runs.
    public func taskStateCounts() throws -> [String: Int] {
        try pg.query("SELECT state, count(*) FROM \(schema).task_instance GROUP BY state").rows
            .reduce(into: [String: Int]()) { m, r in m[try r.decode(String.self, 0)] = try r.decode(Int.self, 1) }
    }

    /// Attempts that ended after `since` (succeeded, failed or to be retried), oldest first, with
    /// their DAG and duration.
    public func finishedAttempts(since: Date, limit: Int) throws -> [(dag: String, seconds: Double, endedAt: Date)] {
        try pg.query(
            """
            SELECT r.dag_id, extract(epoch FROM a.ended_at - a.started_at)::float8, a.ended_at FROM \(schema).task_attempt a
            JOIN \(schema).dag_run r USING (run_id)
            WHERE a.ended_at > $1 AND a.state IN ('success', 'failed', 'up_for_retry') ORDER BY a.ended_at LIMIT $2
            """, [since, limit]
        ).rows.map { (try $0.decode(String.self, 0), try $0.decode(Double.self, 1), try $0.decode(Date.self, 2)) }
    }

    public func retryingCount() throws -> Int {
        try pg.query("SELECT count(*) FROM \(schema).task_instance WHERE state = 'up_for_retry'").rows[0].decode(
            Int.self, 0)
    }

    /// A run's state as stored (the table's CHECK allows only these); an unknown one reads as failed.
    static func runState(_ row: PostgresRow, _ column: Int) throws -> RunState {
        RunState(rawValue: try row.decode(String.self, column)) ?? .failed
    }
}
