import ETLSupport
import Foundation
import PostgresClient
import Workflow

/// The metadata schema (DAGs, runs, task instances, attempts' logs), built by numbered
/// migrations. `Migrator.run` applies the missing ones under an advisory lock, so any number of
/// processes may call it at start-up, and a second call changes nothing.
public enum Migrations {
    public static let all: [(version: Int, name: String, sql: String)] = [
        (
            1, "task queue metadata",
            """
            CREATE SCHEMA IF NOT EXISTS @S;

            CREATE TABLE @S.dag (
                dag_id      text PRIMARY KEY,
                is_paused   boolean NOT NULL,
                schedule    text NOT NULL,
                tags        text[] NOT NULL DEFAULT '{}',
                first_seen  timestamptz NOT NULL DEFAULT now(),
                last_seen   timestamptz NOT NULL DEFAULT now()
            );

            CREATE TABLE @S.dag_run (
                run_id        bigserial PRIMARY KEY,
                dag_id        text NOT NULL REFERENCES @S.dag,
                logical_date  timestamptz NOT NULL,
                run_type      text NOT NULL CHECK (run_type IN ('scheduled', 'manual')),
                state         text NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
                created_at    timestamptz NOT NULL DEFAULT now(),
                started_at    timestamptz,
                ended_at      timestamptz,
                UNIQUE (dag_id, logical_date)
            );
            CREATE INDEX dag_run_active ON @S.dag_run (state) WHERE state IN ('queued', 'running');

            CREATE TABLE @S.task_instance (
                run_id        bigint NOT NULL REFERENCES @S.dag_run ON DELETE CASCADE,
                task_id       text NOT NULL,
                state         text NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
                                                             'up_for_retry', 'upstream_failed')),
                try_number    int NOT NULL DEFAULT 0,
                max_tries     int NOT NULL,
                queue         text NOT NULL,
                worker        text,
                message_id    text,
                queued_at     timestamptz,
                started_at    timestamptz,
                ended_at      timestamptz,
                next_try_at   timestamptz,
                error         text,
                PRIMARY KEY (run_id, task_id)
            );
            CREATE INDEX task_instance_retry ON @S.task_instance (next_try_at) WHERE state = 'up_for_retry';
            CREATE INDEX task_instance_live ON @S.task_instance (state) WHERE state IN ('queued', 'running');

            CREATE TABLE @S.task_attempt (
                run_id        bigint NOT NULL,
                task_id       text NOT NULL,
                try_number    int NOT NULL,
                worker        text,
                state         text NOT NULL,
                started_at    timestamptz NOT NULL DEFAULT now(),
                ended_at      timestamptz,
                error         text,
                log           text NOT NULL DEFAULT '',
                PRIMARY KEY (run_id, task_id, try_number),
                FOREIGN KEY (run_id, task_id) REFERENCES @S.task_instance ON DELETE CASCADE
            );

            CREATE TABLE @S.scheduler_lease (
                name          text PRIMARY KEY,
                holder        text NOT NULL,
                fencing_token bigint NOT NULL,
                expires_at    timestamptz NOT NULL
            );
            """
        ),
        (
            2, "index task states by run",
            """
            -- The scheduler asks after every batch of events whether a run has unfinished tasks: an
            -- index lookup instead of a scan of a run with thousands of tasks.
            CREATE INDEX task_instance_run_state ON @S.task_instance (run_id, state);
            """
        ),
        (
            3, "no task-instance indexes on state",
            """
            -- Every task passes through queued and running, so indexes holding the state collect an
            -- entry per passage that stays until vacuum. The planner, from statistics taken when few
            -- tasks were running, chose (run_id, state) over the primary key to find "this running
            -- task", and walked every entry a run had left there: a cost per task that grew with the
            -- run (4,000 tasks/s on a 60,000-task run against 7,800 on 20,000). Task instances are
            -- found by their key; the scheduler learns that a run is done from its events.
            DROP INDEX IF EXISTS @S.task_instance_run_state;
            DROP INDEX IF EXISTS @S.task_instance_live;
            """
        ),
        (
            4, "cheaper state changes",
            """
            -- A task instance changes state three times (queued, running, ended). With no index on
            -- a column those updates touch, and room left on each page, Postgres updates the row in
            -- place (a HOT update) instead of adding an entry to the primary key each time. Retries
            -- due are found per run by key; the operators' list of delayed retries reads the table.
            DROP INDEX IF EXISTS @S.task_instance_retry;
            ALTER TABLE @S.task_instance SET (fillfactor = 70);
            -- Attempts are only ever created from their task instance's row in the same statement
            -- (MetadataStore.startAttempts); the foreign key's check cost a lookup and a row lock per
            -- attempt. Deleting runs by hand: delete their task_attempt rows too.
            ALTER TABLE @S.task_attempt DROP CONSTRAINT IF EXISTS task_attempt_run_id_task_id_fkey;
            """
        ),
        (
            5, "fencing token checked on writes",
            """
            -- The leading scheduler sets `etl.fence` to its fencing token on its session; every
            -- statement writing runs, task instances or attempts from a session that set one is
            -- refused (SQLSTATE ET001) once another scheduler has taken the lease over, so a leader
            -- that was paused or cut off cannot write after losing its lease. Sessions without a
            -- fence (workers, etlctl, the web server) are not affected. One check per statement.
            CREATE FUNCTION @S.check_fence() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                fence text := current_setting('etl.fence', true);
            BEGIN
                IF fence IS NULL OR fence = '' THEN
                    RETURN NULL;
                END IF;
                IF NOT EXISTS (
                    SELECT 1 FROM @S.scheduler_lease WHERE name = 'scheduler' AND fencing_token = fence::bigint
                ) THEN
                    RAISE EXCEPTION
                        'fenced out: the scheduler lease of fencing token % was taken over by another scheduler', fence
                        USING ERRCODE = 'ET001',
                              HINT = 'this scheduler stands by; the one holding the lease carries on';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON @S.dag_run
                FOR EACH STATEMENT EXECUTE FUNCTION @S.check_fence();
            CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON @S.task_instance
                FOR EACH STATEMENT EXECUTE FUNCTION @S.check_fence();
            CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON @S.task_attempt
                FOR EACH STATEMENT EXECUTE FUNCTION @S.check_fence();
            """
        ),
        (
            6, "backfill runs",
            """
            -- Runs made by `etlctl dags backfill` are of their own type, as in Airflow.
            ALTER TABLE @S.dag_run DROP CONSTRAINT IF EXISTS dag_run_run_type_check;
            ALTER TABLE @S.dag_run ADD CONSTRAINT dag_run_run_type_check
                CHECK (run_type IN ('scheduled', 'manual', 'backfill'));
            """
        ),
        (
            7, "attempt leases",
            """
            -- A running attempt belongs to one runner (a worker slot of one process) through a lease:
            -- who runs it, a delivery epoch that grows each time another runner takes it, the
            -- deliveries of this try, the Postgres backends its runner uses (pid with its start, so a
            -- reused pid is never taken for one), and an expiry on Postgres's clock that the runner's
            -- renewer pushes on. See MetadataStore+attempts.
            ALTER TABLE @S.task_instance
                ADD COLUMN IF NOT EXISTS lease_runner text,
                ADD COLUMN IF NOT EXISTS lease_epoch bigint NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS lease_try int NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS lease_deliveries int NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
                ADD COLUMN IF NOT EXISTS lease_pids int[] NOT NULL DEFAULT '{}',
                ADD COLUMN IF NOT EXISTS lease_pid_starts timestamptz[] NOT NULL DEFAULT '{}';
            """
        ),
        (
            8, "alerts",
            """
            -- What to tell operators (a run that failed or succeeded, a dead letter): one row per
            -- thing, made once (its key is unique) by the leading scheduler, one delivery row per
            -- configured target (named "webhook 1", never by its URL: a secret), and every attempt
            -- to send it. See MetadataStore+alerts and Orchestration's Alerts.
            CREATE TABLE IF NOT EXISTS @S.alert (
                alert_id     bigserial PRIMARY KEY,
                key          text NOT NULL UNIQUE,
                kind         text NOT NULL,
                dag_id       text,
                run_id       bigint,
                task_id      text,
                logical_date timestamptz,
                message      text NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE IF NOT EXISTS @S.alert_delivery (
                alert_id   bigint NOT NULL REFERENCES @S.alert ON DELETE CASCADE,
                target     text NOT NULL,
                attempts   int NOT NULL DEFAULT 0,
                next_at    timestamptz NOT NULL DEFAULT now(),
                sent_at    timestamptz,
                gave_up_at timestamptz,
                last_error text,
                PRIMARY KEY (alert_id, target)
            );
            CREATE INDEX IF NOT EXISTS alert_delivery_due ON @S.alert_delivery (next_at)
                WHERE sent_at IS NULL AND gave_up_at IS NULL;
            CREATE TABLE IF NOT EXISTS @S.alert_attempt (
                alert_id bigint NOT NULL REFERENCES @S.alert ON DELETE CASCADE,
                target   text NOT NULL,
                at       timestamptz NOT NULL DEFAULT clock_timestamp(),
                ok       boolean NOT NULL,
                detail   text NOT NULL
            );
            -- The dead letters already turned into alerts: the stream id read up to.
            CREATE TABLE IF NOT EXISTS @S.alert_cursor (
                name  text PRIMARY KEY,
                value text NOT NULL
            );
            """
        ),
        (
            9, "cancel",
            """
            -- An operator's cancel: a running task is asked to stop (its worker sees the request at its
            -- next lease renewal, interrupts the task and records it cancelled); a task not running yet
            -- is cancelled at once. See MetadataStore+cancel.
            ALTER TABLE @S.task_instance DROP CONSTRAINT IF EXISTS task_instance_state_check;
            ALTER TABLE @S.task_instance ADD CONSTRAINT task_instance_state_check
                CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed', 'up_for_retry',
                                 'upstream_failed', 'cancelled'));
            ALTER TABLE @S.task_instance
                ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz,
                ADD COLUMN IF NOT EXISTS cancel_requested_by text;
            """
        ),
        (
            10, "run waits",
            """
            -- Since when a run admitted to start waits for its upstream DAGs' runs or its inputs
            -- (ETL_UPSTREAM_WAIT_LIMIT counts from then; a clear starts the count again).
            ALTER TABLE @S.dag_run ADD COLUMN IF NOT EXISTS waiting_since timestamptz;
            """
        ),
        (
            11, "audit",
            """
            -- Every operator action (web UI, API, etlctl): who, when, what, on what, from where, and
            -- whether it went through. See MetadataStore+audit and OperatorActions.
            CREATE TABLE IF NOT EXISTS @S.audit (
                id      bigserial PRIMARY KEY,
                at      timestamptz NOT NULL DEFAULT clock_timestamp(),
                actor   text NOT NULL,
                origin  text NOT NULL,
                action  text NOT NULL,
                target  text NOT NULL DEFAULT '',
                detail  text NOT NULL DEFAULT '',
                ok      boolean NOT NULL,
                error   text
            );
            CREATE INDEX IF NOT EXISTS audit_at ON @S.audit (at DESC);
            """
        ),
        (
            12, "web users",
            """
            -- The web UI's users: a bcrypt hash of each password (never the password) and a role:
            -- viewer (reads), operator (acts on DAGs, runs, tasks and queues), admin (also users).
            CREATE TABLE IF NOT EXISTS @S.web_user (
                name          text PRIMARY KEY,
                password_hash text NOT NULL,
                role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
                created_at    timestamptz NOT NULL DEFAULT now(),
                updated_at    timestamptz NOT NULL DEFAULT now()
            );
            """
        ),
        (
            13, "run parameters",
            """
            -- The run's parameters as it was created (every one its DAG declares, defaults filled
            -- in): what its tasks read (TaskContext.param) and its page shows. See DAGParam.
            ALTER TABLE @S.dag_run ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}';
            -- A run of another output ('top=3'; '' for the default) is another report: a date has
            -- one run per DAG and variant, so a variant never takes the default run's place.
            ALTER TABLE @S.dag_run ADD COLUMN IF NOT EXISTS variant text NOT NULL DEFAULT '';
            ALTER TABLE @S.dag_run DROP CONSTRAINT IF EXISTS dag_run_dag_id_logical_date_key;
            ALTER TABLE @S.dag_run ADD CONSTRAINT dag_run_dag_id_logical_date_variant_key
                UNIQUE (dag_id, logical_date, variant);
            """
        ),
    ]
}

/// Applies `Migrations.all` to a database, into the schema `schema` (default `etl`; tests use
/// one schema each), then the setup scripts that changed since they were last applied.
public enum Migrator {
    /// How long a program's start waits for a lock its migration needs before it fails with the
    /// reason (a lock held by a running load, say), instead of waiting for ever.
    public static let lockTimeout = "30s"

    /// Applies the migrations not yet recorded in `<schema>.schema_migrations`, and each setup
    /// script whose checksum differs from the one recorded in `<schema>.schema_setup` (`force`:
    /// every script, as `etlctl migrate` does, to put back a table dropped by hand). Returns the
    /// migration versions applied now (empty when the schema was already current).
    @discardableResult
    public static func run(
        _ pg: PostgresConnection, schema: String = "etl", setup: [SetupScript] = [], force: Bool = false
    ) throws -> [Int] {
        guard schema.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLowercase || $0.isNumber)) }), !schema.isEmpty
        else {
            throw ConfigError(
                variable: "ETL_SCHEMA", problem: "'\(schema)' is not a plain schema name",
                fix: "use lower-case letters, digits and underscores")
        }
        return try pg.transaction { tx in
            try tx.execute(script: "SET LOCAL lock_timeout = '\(lockTimeout)'")
            // One migrator at a time across every process; released at commit.
            try tx.query("SELECT pg_advisory_xact_lock(727274)")
            try tx.execute(
                script: """
                    CREATE SCHEMA IF NOT EXISTS \(schema);
                    CREATE TABLE IF NOT EXISTS \(schema).schema_migrations (
                        version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
                    CREATE TABLE IF NOT EXISTS \(schema).schema_setup (
                        name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """)
            let done = Set(
                try tx.query("SELECT version FROM \(schema).schema_migrations").rows.map { try $0.decode(Int.self, 0) })
            var applied: [Int] = []
            for m in Migrations.all where !done.contains(m.version) {
                try tx.execute(script: m.sql.replacingOccurrences(of: "@S", with: schema))
                try tx.query(
                    "INSERT INTO \(schema).schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name])
                applied.append(m.version)
            }
            // Idempotent DDL the loaded DAGs need (CREATE ... IF NOT EXISTS), under the same lock so
            // processes starting together do not race on it; skipped when unchanged, because even
            // CREATE INDEX IF NOT EXISTS locks its table against writers.
            for script in setup {
                let sql = try script.sql().replacingOccurrences(of: "@S", with: schema)
                let same =
                    try tx.query(
                        "SELECT checksum = md5($2) FROM \(schema).schema_setup WHERE name = $1", [script.name, sql]
                    )
                    .rows.first.map { try $0.decode(Bool.self, 0) } ?? false
                if same && !force { continue }
                try tx.execute(script: sql)
                try tx.query(
                    """
                    INSERT INTO \(schema).schema_setup (name, checksum) VALUES ($1, md5($2))
                    ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()
                    """, [script.name, sql])
            }
            return applied
        }
    }
}
