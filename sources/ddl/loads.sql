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
-- How the loaded rows changed the table: new keys, new versions of changed rows, rows equal to the
-- version already there, and rows ended (catalog rows removed, or a re-exported day's old facts).
ALTER TABLE load ADD COLUMN IF NOT EXISTS rows_inserted bigint NOT NULL DEFAULT 0;
ALTER TABLE load ADD COLUMN IF NOT EXISTS rows_updated bigint NOT NULL DEFAULT 0;
ALTER TABLE load ADD COLUMN IF NOT EXISTS rows_unchanged bigint NOT NULL DEFAULT 0;
ALTER TABLE load ADD COLUMN IF NOT EXISTS rows_removed bigint NOT NULL DEFAULT 0;
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

-- The b2b ledger: each day of the platform's export that is loaded (the first day, the history's
-- start, includes the base CSVs). `signature` (file names, sizes and modification times) lets a
-- run skip unchanged days without reading them; the checksums tell a re-exported day: new facts
-- replace that day's orders and sales (`replaced_at`), changed dimension rows are refused.
CREATE TABLE IF NOT EXISTS b2b_day (
    day            date PRIMARY KEY,
    signature      text NOT NULL,
    facts_checksum text NOT NULL,
    dims_checksum  text NOT NULL,
    orders         bigint NOT NULL,
    sales_lines    bigint NOT NULL,
    run_id         bigint,
    loaded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    replaced_at    timestamptz
);

-- When each report's rows for a date were computed, to tell which reports read data that was
-- corrected afterwards (shown out of date until recomputed).
CREATE TABLE IF NOT EXISTS report_computed (
    report       text NOT NULL,
    logical_date date NOT NULL,
    computed_at  timestamptz NOT NULL,
    PRIMARY KEY (report, logical_date)
);

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
