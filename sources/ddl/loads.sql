-- Load metadata: every load, every bad row, and the ledger of access-log files.
-- Run with search_path set to the loads schema. Idempotent.

-- One load of one source (a CSV table, the ip2geo file, an access-log file).
-- A load is `running`, then `finished`, or `broken` with its error; a broken load that is
-- resumed goes back to `running`.
CREATE TABLE IF NOT EXISTS load (
    id            bigserial PRIMARY KEY,
    pipeline      text NOT NULL,
    source        text NOT NULL,
    run_id        bigint,
    logical_date  date,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'broken', 'finished')),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    broke_at      timestamptz,
    error         text,
    finished_at   timestamptz,
    rows_read     bigint NOT NULL DEFAULT 0,
    rows_loaded   bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    bytes         bigint NOT NULL DEFAULT 0,
    CHECK (rows_read = rows_loaded + rows_rejected)
);
CREATE INDEX IF NOT EXISTS load_started ON load (started_at DESC);

-- A row or line that was not loaded, with where it was and why.
CREATE TABLE IF NOT EXISTS reject (
    id          bigserial PRIMARY KEY,
    load_id     bigint NOT NULL REFERENCES load (id) ON DELETE CASCADE,
    source      text NOT NULL,
    line_number bigint NOT NULL,
    raw         text NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX IF NOT EXISTS reject_load ON reject (load_id);

-- The access-log files seen so far. A file (by checksum) is loaded once; its byte ranges are
-- loaded in parallel, each resumable from its last committed chunk.
CREATE TABLE IF NOT EXISTS weblog_file (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    path          text NOT NULL,
    size          bigint NOT NULL,
    checksum      text NOT NULL UNIQUE,
    lines         bigint NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'loading', 'loaded')),
    load_id       bigint REFERENCES load (id),
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    loaded_at     timestamptz
);

CREATE TABLE IF NOT EXISTS weblog_range (
    file_id          bigint NOT NULL REFERENCES weblog_file (id),
    part             integer NOT NULL,
    start_offset     bigint NOT NULL,
    end_offset       bigint NOT NULL,
    first_line       bigint NOT NULL,
    committed_offset bigint NOT NULL,
    next_line        bigint NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'loading', 'done')),
    owner            text,
    rows_read        bigint NOT NULL DEFAULT 0,
    rows_loaded      bigint NOT NULL DEFAULT 0,
    rows_rejected    bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (file_id, part),
    CHECK (committed_offset BETWEEN start_offset AND end_offset)
);
