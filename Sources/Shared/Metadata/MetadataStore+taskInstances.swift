import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// Task instances of a run as the scheduler reads and moves them.
extension MetadataStore {

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
            SELECT task_id, state, try_number, max_tries, started_at, next_try_at, message_id FROM \(s).task_instance
                WHERE run_id = $1
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
            UPDATE \(s).task_instance t SET state = 'queued', try_number = t.try_number + 1, queued_at =
                clock_timestamp(),
              message_id = gen_random_uuid()::text, worker = NULL, started_at = NULL, ended_at = NULL, next_try_at =
                  NULL
            WHERE t.run_id = $1 AND t.task_id = ANY($2::text[])
              AND (t.state = 'scheduled' OR (t.state = 'up_for_retry' AND t.next_try_at <= now()))
            RETURNING t.task_id, t.try_number, t.message_id
            """, [run, PostgresArray(tasks)], planEachTime: tasks.count > Self.smallBatch
        ).rows.map {
            (try $0.decode(String.self, 0), try $0.decode(Int.self, 1), try $0.decode(String.self, 2))
        }
    }

    /// States of some tasks of a run.
    public func states(run: Int64, tasks: [String]) throws -> [String: TaskState] {
        var out: [String: TaskState] = [:]
        for r in try pg.query(
            "SELECT task_id, state FROM \(s).task_instance WHERE run_id = $1 AND task_id = ANY($2::text[])",
            [run, PostgresArray(tasks)]
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
            SELECT EXISTS (SELECT 1 FROM \(s).task_instance WHERE run_id = $1 AND state IN ('scheduled', 'queued',
                'running', 'up_for_retry')),
                   NOT EXISTS (SELECT 1 FROM \(s).task_instance WHERE run_id = $1 AND state IN ('failed',
                       'upstream_failed', 'cancelled'))
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

    /// Ends the run's tasks that have not started as upstream-failed with `reason` as their error
    /// (a run that waited too long for upstream runs or its inputs).
    public func failWaitingTasks(run: Int64, reason: String) throws {
        try pg.query(
            "UPDATE \(s).task_instance SET state = 'upstream_failed', ended_at = now(), error = $2 WHERE run_id = $1 "
                + "AND state = 'scheduled'",
            [run, reason])
    }

    public func markUpstreamFailed(run: Int64, tasks: [String]) throws {
        guard !tasks.isEmpty else { return }
        try pg.query(
            "UPDATE \(s).task_instance SET state = 'upstream_failed', ended_at = now() WHERE run_id = $1 AND "
                + "task_id = ANY($2::text[]) AND state = 'scheduled'",
            [run, PostgresArray(tasks)])
    }

    /// How many task instances of each DAG and task are queued or running in active runs (what
    /// holds pool slots). Read through the active runs, so the history is never scanned.
    public func busyTasks() throws -> [(dag: String, task: String, count: Int)] {
        try pg.query(
            """
            SELECT r.dag_id, t.task_id, count(*)::int FROM \(s).dag_run r
            JOIN \(s).task_instance t ON t.run_id = r.run_id
            WHERE r.state IN ('queued', 'running') AND t.state IN ('queued', 'running')
            GROUP BY 1, 2
            """
        ).rows.map { (try $0.decode(String.self, 0), try $0.decode(String.self, 1), try $0.decode(Int.self, 2)) }
    }
}
