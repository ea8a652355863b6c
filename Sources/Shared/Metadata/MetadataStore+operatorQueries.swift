import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// What operators read (etlctl, the web UI, /metrics): DAGs, runs, tasks, attempts and their logs.
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
        /// The run's parameters (`DAGParam`), as it was created.
        public let params: [String: String]
        /// Its output parameters that differ from their defaults (`top=3`), "" for the date's default run.
        public let variant: String
        enum CodingKeys: String, CodingKey {
            case id = "run"
            case dag
            case logicalDate = "logical_date"
            case type, state
            case startedAt = "started_at"
            case endedAt = "ended_at"
            case params, variant
        }
    }

    public func runRows(dag: String?, limit: Int) throws -> [RunRow] {
        try pg.query(
            """
            SELECT \(Self.runColumns) FROM \(schema).dag_run
            WHERE $1::text IS NULL OR dag_id = $1 ORDER BY run_id DESC LIMIT $2
            """, [dag, limit]
        ).rows.map(Self.runRow)
    }

    /// One run by id, with its type and timings.
    public func runRow(_ id: Int64) throws -> RunRow? {
        try pg.query(
            "SELECT \(Self.runColumns) FROM \(schema).dag_run WHERE run_id = $1",
            [id]
        )
        .rows.first.map(Self.runRow)
    }

    /// What `runRow` reads, in its order.
    static let runColumns = "run_id, dag_id, logical_date, run_type, state, started_at, ended_at, params::text, variant"

    static func runRow(_ r: PostgresRow) throws -> RunRow {
        RunRow(
            id: try r.decode(Int64.self, 0), dag: try r.decode(String.self, 1), logicalDate: try r.decode(Date.self, 2),
            type: RunType(rawValue: try r.decode(String.self, 3)) ?? .manual, state: try MetadataStore.runState(r, 4),
            startedAt: try r.decode(Date?.self, 5), endedAt: try r.decode(Date?.self, 6),
            params: params(json: try r.decode(String?.self, 7)), variant: try r.decode(String.self, 8))
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
            SELECT task_id, state, try_number, max_tries, worker, started_at, ended_at, error FROM
                \(schema).task_instance
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

    /// The newest attempt of a task as a follower of its log sees it: its log from character
    /// `offset` on (the whole log when it is another try than `tryNumber`), its state and error,
    /// and the task instance's state (for a task that ends without an attempt).
    public struct LogTail: Sendable {
        public let tryNumber: Int?
        public let worker: String?
        public let state: String?
        public let error: String?
        /// The log's length in characters, and its text from the offset asked for.
        public let length: Int
        public let text: String
        public let taskState: String?
    }

    public func logTail(run: Int64, task: String, tryNumber: Int?, offset: Int) throws -> LogTail {
        let rows = try pg.query(
            """
            SELECT a.try_number, a.worker, a.state, a.error, length(a.log),
              substr(a.log, CASE WHEN a.try_number = $3 THEN $4 + 1 ELSE 1 END), t.state
            FROM \(schema).task_instance t
            LEFT JOIN LATERAL (
              SELECT * FROM \(schema).task_attempt a WHERE a.run_id = t.run_id AND a.task_id = t.task_id
              ORDER BY a.try_number DESC LIMIT 1
            ) a ON true
            WHERE t.run_id = $1 AND t.task_id = $2
            """, [run, task, tryNumber, offset]
        ).rows
        guard let r = rows.first else {
            return LogTail(tryNumber: nil, worker: nil, state: nil, error: nil, length: 0, text: "", taskState: nil)
        }
        return LogTail(
            tryNumber: try r.decode(Int?.self, 0), worker: try r.decode(String?.self, 1),
            state: try r.decode(String?.self, 2), error: try r.decode(String?.self, 3),
            length: try r.decode(Int?.self, 4) ?? 0, text: try r.decode(String?.self, 5) ?? "",
            taskState: try r.decode(String.self, 6))
    }

    /// The newest `perDAG` runs of every DAG, newest first within a DAG.
    public func recentRuns(perDAG: Int) throws -> [RunRow] {
        try pg.query(
            """
            SELECT \(Self.runColumns) FROM (
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
            SELECT run_id, task_id, state, try_number, started_at, ended_at FROM \(schema).task_instance WHERE run_id =
                ANY($1::bigint[])
            """, [PostgresArray(runs)]
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
            SELECT t.run_id, r.dag_id, t.task_id, t.try_number, t.next_try_at FROM \(schema).task_instance t JOIN
                \(schema).dag_run r USING (run_id)
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
            // Task rows before the run's row, in key order: the order a worker's start takes them in
            // (its task rows, then the run's), so the two never wait on each other in a cycle.
            try tx.query(
                "SELECT 1 FROM \(schema).task_instance WHERE run_id = $1 ORDER BY task_id FOR UPDATE", [run])
            guard
                try tx.query(
                    "UPDATE \(schema).dag_run SET state = 'failed', ended_at = now() WHERE run_id = $1 AND "
                        + "state IN ('queued', 'running')",
                    [run]
                ).affectedRows == 1
            else { return false }
            // Its running tasks stop: the backends their runners registered under the attempt
            // leases are ended (their open transactions roll back), and the leases end with them.
            try tx.query(
                """
                SELECT count(pg_terminate_backend(a.pid, 5000))
                FROM \(schema).task_instance t
                CROSS JOIN LATERAL unnest(t.lease_pids, t.lease_pid_starts) AS b(pid, started)
                JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.started
                WHERE t.run_id = $1 AND t.state = 'running' AND a.pid <> pg_backend_pid()
                """, [run])
            try tx.query(
                """
                UPDATE \(schema).task_instance SET state = 'failed', ended_at = now(), error = $2,
                  lease_expires_at = NULL, lease_pids = '{}', lease_pid_starts = '{}'
                WHERE run_id = $1 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')
                """, [run, reason])
            try tx.query(
                "UPDATE \(schema).task_attempt SET state = 'failed', ended_at = now(), error = $2 WHERE run_id "
                    + "= $1 AND state = 'running'",
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
            SELECT r.dag_id, extract(epoch FROM a.ended_at - a.started_at)::float8, a.ended_at FROM
                \(schema).task_attempt a
            JOIN \(schema).dag_run r USING (run_id)
            WHERE a.ended_at > $1 AND a.state IN ('success', 'failed', 'up_for_retry', 'cancelled') ORDER BY a.ended_at
              LIMIT $2
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
