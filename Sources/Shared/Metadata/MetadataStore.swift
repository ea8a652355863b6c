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

    var s: String { schema }

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
                    PostgresArray(d.tags),
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
}
