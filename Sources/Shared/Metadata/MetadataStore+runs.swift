import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// Runs: created when due or triggered, their states, the upstream DAGs they wait for.
extension MetadataStore {

    /// Creates a run with every task `scheduled`; nil if the DAG already has a run for that date.
    @discardableResult
    /// `params`: the run's parameters, resolved already (`DAG.resolveParams`); nil: the defaults.
    public func createRun(
        _ dag: DAG, logicalDate: Date, type: RunType, params: [String: String]? = nil
    ) throws -> Int64? {
        let values = try params ?? dag.resolveParams([:], type: type)
        let run = try pg.transaction { tx -> Int64? in
            guard
                let row = try tx.query(
                    """
                    INSERT INTO \(s).dag_run (dag_id, logical_date, run_type, state, params, variant)
                    VALUES ($1, $2, $3, 'queued', $4::jsonb, $5)
                    ON CONFLICT (dag_id, logical_date, variant) DO NOTHING RETURNING run_id
                    """, [dag.id, logicalDate, type.rawValue, Self.paramsJSON(values), dag.variant(of: values)]
                ).first
            else { return nil }
            let runID = try row.decode(Int64.self, 0)
            // Every task in one statement: a 20,000-task run is one round trip, not 20,000.
            try tx.query(
                """
                INSERT INTO \(s).task_instance (run_id, task_id, state, max_tries, queue)
                SELECT $1, task_id, 'scheduled', max_tries, queue FROM unnest($2::text[], $3::int[], $4::text[]) AS
                    i(task_id, max_tries, queue)
                """,
                [
                    runID, PostgresArray(dag.tasks.map(\.id)),
                    PostgresArray(dag.tasks.map { String($0.retries + 1) }),
                    PostgresArray(dag.tasks.map(\.queue)),
                ])
            return runID
        }
        // A big run changes the table's make-up at once, long before autovacuum notices: fresh
        // statistics keep the scheduler's and workers' lookups by key on the primary key (with a
        // run of 60,000 tasks unseen, the planner read the whole run for each chunk of 500).
        if run != nil && dag.tasks.count >= 1000 { try pg.query("ANALYZE \(s).task_instance") }
        return run
    }

    /// Run parameters as the JSON object `dag_run.params` holds (keys sorted).
    public static func paramsJSON(_ params: [String: String]) -> String {
        let data = try? JSONSerialization.data(withJSONObject: params, options: [.sortedKeys])
        return data.flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }

    /// `dag_run.params` as text, back as a map (nil or malformed: none).
    public static func params(json: String?) -> [String: String] {
        guard let json, let data = json.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return object.reduce(into: [:]) { m, kv in m[kv.key] = kv.value as? String ?? "\(kv.value)" }
    }

    /// The parameters run `run` was created with (empty for an unknown run or one made before
    /// runs had parameters).
    public func runParams(_ run: Int64) throws -> [String: String] {
        Self.params(
            json: try pg.query("SELECT params::text FROM \(s).dag_run WHERE run_id = $1", [run])
                .rows.first?.decode(String?.self, 0))
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

    public func run(_ id: Int64) throws -> Run? {
        try pg.query("SELECT run_id, dag_id, logical_date, state FROM \(s).dag_run WHERE run_id = $1", [id])
            .rows.first.map {
                Run(
                    id: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                    logicalDate: try $0.decode(Date.self, 2), state: try MetadataStore.runState($0, 3))
            }
    }

    /// True when every DAG in `upstream` has a successful run for `logicalDate`.
    /// The state of each of `dags`' run for `logicalDate` (the newest, should there be several).
    public func runStates(of dags: [String], logicalDate: Date) throws -> [String: RunState] {
        guard !dags.isEmpty else { return [:] }
        var out: [String: RunState] = [:]
        for r in try pg.query(
            """
            SELECT DISTINCT ON (dag_id) dag_id, state FROM \(s).dag_run
            WHERE dag_id = ANY($1::text[]) AND logical_date = $2 AND variant = '' ORDER BY dag_id, run_id DESC
            """, [PostgresArray(dags), logicalDate]
        ).rows {
            out[try r.decode(String.self, 0)] = try MetadataStore.runState(r, 1)
        }
        return out
    }

    /// An active run of a DAG, and whether it has work under way (state running, or a task queued,
    /// running or up for retry).
    public struct ActiveRun: Sendable {
        public let run: Run
        public let inFlight: Bool
    }

    /// The active (queued or running) runs of `dag` (of every DAG when nil), with whether each has
    /// work under way.
    public func activeRuns(dag: String?) throws -> [ActiveRun] {
        try pg.query(
            """
            SELECT r.run_id, r.dag_id, r.logical_date, r.state,
                   r.state = 'running' OR EXISTS (SELECT 1 FROM \(s).task_instance t WHERE t.run_id = r.run_id
                       AND t.state IN ('queued', 'running', 'up_for_retry'))
            FROM \(s).dag_run r WHERE ($1::text IS NULL OR r.dag_id = $1) AND r.state IN ('queued', 'running')
            ORDER BY r.run_id
            """, [dag]
        )
        .rows.map {
            ActiveRun(
                run: Run(
                    id: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                    logicalDate: try $0.decode(Date.self, 2), state: try MetadataStore.runState($0, 3)),
                inFlight: try $0.decode(Bool.self, 4))
        }
    }

    /// Of the queued runs `runs` (id and the DAGs it waits for), those one of whose upstream DAGs'
    /// latest run for the same logical date failed: one query for all (the tick asks it every second,
    /// also for the runs that its DAG's max active runs keep waiting).
    public func runsWithFailedUpstream(_ runs: [(run: Int64, upstream: [String])]) throws -> Set<Int64> {
        let pairs = runs.flatMap { r in r.upstream.map { (r.run, $0) } }
        guard !pairs.isEmpty else { return [] }
        return Set(
            try pg.query(
                """
                SELECT DISTINCT p.run_id FROM unnest($1::bigint[], $2::text[]) AS p(run_id, up)
                JOIN \(s).dag_run r ON r.run_id = p.run_id AND r.state = 'queued'
                WHERE (SELECT u.state FROM \(s).dag_run u
                       WHERE u.dag_id = p.up AND u.logical_date = r.logical_date AND u.variant = ''
                       ORDER BY u.run_id DESC LIMIT 1) = 'failed'
                """, [PostgresArray(pairs.map { String($0.0) }), PostgresArray(pairs.map(\.1))]
            ).rows.map { try $0.decode(Int64.self, 0) })
    }

    /// Whether `run` has been waiting longer than `seconds` (on Postgres's clock), counted from the
    /// first time this asks while it waits (a run queued behind max active runs is not waiting yet;
    /// a clear starts the count again).
    public func waitedLonger(run: Int64, than seconds: Double) throws -> Bool {
        try pg.query(
            """
            UPDATE \(s).dag_run SET waiting_since = coalesce(waiting_since, clock_timestamp()) WHERE run_id = $1
            RETURNING clock_timestamp() - waiting_since > make_interval(secs => $2)
            """, [run, seconds]
        ).rows.first?.decode(Bool.self, 0) ?? false
    }

    /// The scheduled runs not finished yet whose DAG is among `dags`.
    public func unfinishedScheduledRuns(dags: [String]) throws -> [Run] {
        guard !dags.isEmpty else { return [] }
        return try pg.query(
            """
            SELECT run_id, dag_id, logical_date, state FROM \(s).dag_run
            WHERE state IN ('queued', 'running') AND run_type = 'scheduled' AND dag_id = ANY($1::text[])
            ORDER BY run_id
            """, [PostgresArray(dags)]
        ).rows.map {
            Run(
                id: try $0.decode(Int64.self, 0), dag: try $0.decode(String.self, 1),
                logicalDate: try $0.decode(Date.self, 2), state: try MetadataStore.runState($0, 3))
        }
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

    /// The states of runs `ids`, in one query (a missing run is left out).
    public func states(ofRuns ids: [Int64]) throws -> [Int64: RunState] {
        guard !ids.isEmpty else { return [:] }
        var out: [Int64: RunState] = [:]
        for r in try pg.query(
            "SELECT run_id, state FROM \(s).dag_run WHERE run_id = ANY($1::bigint[])", [PostgresArray(ids)]
        ).rows {
            out[try r.decode(Int64.self, 0)] = try MetadataStore.runState(r, 1)
        }
        return out
    }
}
