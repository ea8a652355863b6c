import Foundation
import PostgresClient

/// Alerts (migration 8): each made once, by a unique key, with one delivery row per target, and
/// every attempt to deliver it recorded. Orchestration's `AlertSender` sends them.
extension MetadataStore {
    /// A delivery of an alert to one target that is due.
    public struct DueAlert: Sendable {
        public let id: Int64
        public let target: String
        public let attempts: Int
        public let kind: String
        public let dag: String?
        public let run: Int64?
        public let task: String?
        public let logicalDate: Date?
        public let message: String
    }

    /// Records the alert for `run` having ended (`run_failed`, or `run_success`) for `targets`,
    /// once per run and kind, its message the first line of each failed task's error (the failed
    /// tasks first, then those whose upstream failed).
    public func recordRunAlert(run: Int64, failed: Bool, targets: [String]) throws {
        guard !targets.isEmpty else { return }
        try pg.query(
            """
            WITH r AS (
              SELECT run_id, dag_id, logical_date FROM \(s).dag_run WHERE run_id = $1
            ), bad AS (
              SELECT task_id || ': ' || coalesce(nullif(left(split_part(error, E'\\n', 1), 300), ''), state) AS line,
                row_number() OVER (ORDER BY state = 'upstream_failed', task_id) AS n
              FROM \(s).task_instance WHERE run_id = $1 AND state IN ('failed', 'cancelled', 'upstream_failed')
            ), why AS (
              -- The first 50 tasks (a message stays small whatever the run's size), then how many more.
              SELECT string_agg(line, E'\\n' ORDER BY n) FILTER (WHERE n <= 50)
                  || CASE WHEN count(*) > 50 THEN E'\\n... and ' || (count(*) - 50) || ' more' ELSE '' END AS text
              FROM bad
            ), new AS (
              INSERT INTO \(s).alert (key, kind, dag_id, run_id, logical_date, message)
              SELECT $2 || ':' || r.run_id, $2, r.dag_id, r.run_id, r.logical_date, coalesce(why.text, '')
              FROM r, why
              ON CONFLICT (key) DO NOTHING
              RETURNING alert_id
            )
            INSERT INTO \(s).alert_delivery (alert_id, target) SELECT alert_id, t FROM new, unnest($3::text[]) AS t
            """, [run, failed ? "run_failed" : "run_success", PostgresArray(targets)])
    }

    /// Records the alerts that `tasks` of `run` failed with no tries left (those of them failed
    /// now), each message the first line of the task's error; once per task and try.
    public func recordTaskAlerts(run: Int64, tasks: [String], targets: [String]) throws {
        guard !targets.isEmpty, !tasks.isEmpty else { return }
        try pg.query(
            """
            WITH new AS (
              INSERT INTO \(s).alert (key, kind, dag_id, run_id, task_id, logical_date, message)
              SELECT 'task_failed:' || r.run_id || ':' || t.task_id || ':' || t.try_number, 'task_failed', r.dag_id,
                r.run_id, t.task_id, r.logical_date,
                t.task_id || ': ' || coalesce(nullif(left(split_part(t.error, E'\\n', 1), 300), ''), t.state)
              FROM \(s).dag_run r JOIN \(s).task_instance t USING (run_id)
              WHERE r.run_id = $1 AND t.task_id = ANY($2::text[]) AND t.state = 'failed'
              ON CONFLICT (key) DO NOTHING
              RETURNING alert_id
            )
            INSERT INTO \(s).alert_delivery (alert_id, target) SELECT alert_id, t FROM new, unnest($3::text[]) AS t
            """, [run, PostgresArray(tasks), PostgresArray(targets)])
    }

    /// Records that `run` has not finished by its deadline (`message` says which), once per run.
    public func recordDeadlineAlert(run: Int64, message: String, targets: [String]) throws {
        guard !targets.isEmpty else { return }
        try pg.query(
            """
            WITH new AS (
              INSERT INTO \(s).alert (key, kind, dag_id, run_id, logical_date, message)
              SELECT 'deadline_missed:' || run_id, 'deadline_missed', dag_id, run_id, logical_date, $2
              FROM \(s).dag_run WHERE run_id = $1
              ON CONFLICT (key) DO NOTHING
              RETURNING alert_id
            )
            INSERT INTO \(s).alert_delivery (alert_id, target) SELECT alert_id, t FROM new, unnest($3::text[]) AS t
            """, [run, message, PostgresArray(targets)])
    }

    /// A dead letter to tell about.
    public struct DeadLetterAlert: Sendable {
        public let entryID: String
        public let dag: String?
        public let run: Int64?
        public let task: String?
        public let message: String
        public init(entryID: String, dag: String?, run: Int64?, task: String?, message: String) {
            (self.entryID, self.dag, self.run, self.task, self.message) = (entryID, dag, run, task, message)
        }
    }

    /// The stream id up to which dead letters became alerts; nil before the first look.
    public func alertCursor(_ name: String) throws -> String? {
        try pg.query("SELECT value FROM \(s).alert_cursor WHERE name = $1", [name]).rows.first?.decode(String.self, 0)
    }

    /// Records `letters` as alerts for `targets` (once each) and moves the cursor to `cursor`, in one
    /// transaction.
    public func recordDeadLetterAlerts(
        _ letters: [DeadLetterAlert], cursor: (name: String, value: String), targets: [String]
    ) throws {
        try pg.transaction { tx in
            if !letters.isEmpty && !targets.isEmpty {
                try tx.query(
                    """
                    WITH i AS (
                      SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
                          AS i(entry, dag_id, run_id, task_id, message)
                    ), new AS (
                      INSERT INTO \(s).alert (key, kind, dag_id, run_id, task_id, message)
                      SELECT 'dead_letter:' || entry, 'dead_letter', dag_id, run_id, task_id, message FROM i
                      ON CONFLICT (key) DO NOTHING
                      RETURNING alert_id
                    )
                    INSERT INTO \(s).alert_delivery (alert_id, target)
                    SELECT alert_id, t FROM new, unnest($6::text[]) AS t
                    """,
                    [
                        PostgresArray(letters.map(\.entryID)), PostgresArray(letters.map(\.dag)),
                        PostgresArray(letters.map { $0.run.map(String.init) }), PostgresArray(letters.map(\.task)),
                        PostgresArray(letters.map(\.message)), PostgresArray(targets),
                    ], planEachTime: true)
            }
            try tx.query(
                """
                INSERT INTO \(s).alert_cursor (name, value) VALUES ($1, $2)
                ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value
                """, [cursor.name, cursor.value])
        }
    }

    /// Deliveries due now (not sent, not given up, their retry time come), oldest first.
    public func dueAlerts(limit: Int) throws -> [DueAlert] {
        try pg.query(
            """
            SELECT d.alert_id, d.target, d.attempts, a.kind, a.dag_id, a.run_id, a.task_id, a.logical_date, a.message
            FROM \(s).alert_delivery d JOIN \(s).alert a USING (alert_id)
            WHERE d.sent_at IS NULL AND d.gave_up_at IS NULL AND d.next_at <= now()
            ORDER BY d.next_at, d.alert_id LIMIT $1
            """, [limit]
        ).rows.map {
            DueAlert(
                id: try $0.decode(Int64.self, 0), target: try $0.decode(String.self, 1),
                attempts: try $0.decode(Int.self, 2), kind: try $0.decode(String.self, 3),
                dag: try $0.decode(String?.self, 4), run: try $0.decode(Int64?.self, 5),
                task: try $0.decode(String?.self, 6), logicalDate: try $0.decode(Date?.self, 7),
                message: try $0.decode(String.self, 8))
        }
    }

    /// Records one attempt to deliver `alert`: sent when `ok`; otherwise tried again in `retryIn`
    /// seconds, or given up when that is nil. `detail` must hold no secret (no URL).
    public func recordAlertAttempt(_ alert: DueAlert, ok: Bool, detail: String, retryIn: Double?) throws {
        try pg.query(
            """
            WITH attempt AS (
              INSERT INTO \(s).alert_attempt (alert_id, target, ok, detail) VALUES ($1, $2, $3, $4)
            )
            UPDATE \(s).alert_delivery SET attempts = attempts + 1,
              sent_at = CASE WHEN $3 THEN now() END,
              last_error = CASE WHEN $3 THEN NULL ELSE $4 END,
              next_at = now() + make_interval(secs => coalesce($5::float8, 0)),
              gave_up_at = CASE WHEN NOT $3 AND $5::float8 IS NULL THEN now() END
            WHERE alert_id = $1 AND target = $2
            """, [alert.id, alert.target, ok, detail, retryIn])
    }
}
