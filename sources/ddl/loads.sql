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

-- The access-log files seen so far (the ledger). A file is known by the SHA-256 of its first line
-- (`first_line_hash`, bytes up to and including the first newline) and of the bytes registered so
-- far (`prefix_checksum`, bytes [0, registered_end)): a file found with the same first line and
-- the same registered bytes is the same file, whatever its name now (renamed, rotated, gzipped),
-- and only its complete lines after `registered_end` are new (a segment of its own). The same
-- first line with other registered bytes is refused (see weblog_seen). `path`, `name`, `size`
-- (bytes on disk: a gzipped file's compressed size) and `mtime_ns` are where and how it was last
-- seen: a file with the same path, size and modification time is not read again. Offsets of a
-- gzipped file (`gzip`) are in its decompressed stream. `checksum` is the SHA-256 of what was
-- first registered (kept from the ledger's first version, where it was the file's identity);
-- `lines` counts every registered line. Ledgers from before: `registered_end` = size,
-- `prefix_checksum` = checksum, `first_line_hash` NULL until a registration finds the file at its
-- path with those bytes and fills it in ('unknown' when the path holds other bytes; such a file is
-- then matched only by an identical prefix).
CREATE TABLE IF NOT EXISTS weblog_file (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    path          text NOT NULL,
    size          bigint NOT NULL,
    checksum      text NOT NULL,
    lines         bigint NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'loading', 'loaded')),
    load_id       bigint REFERENCES load (id),
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    loaded_at     timestamptz
);
-- The first version identified a file by its whole checksum (unique); a grown file keeps its row.
ALTER TABLE weblog_file DROP CONSTRAINT IF EXISTS weblog_file_checksum_key;
ALTER TABLE weblog_file ADD COLUMN IF NOT EXISTS first_line_hash text;
ALTER TABLE weblog_file ADD COLUMN IF NOT EXISTS registered_end bigint;
ALTER TABLE weblog_file ADD COLUMN IF NOT EXISTS prefix_checksum text;
ALTER TABLE weblog_file ADD COLUMN IF NOT EXISTS mtime_ns bigint;
ALTER TABLE weblog_file ADD COLUMN IF NOT EXISTS gzip boolean NOT NULL DEFAULT false;
UPDATE weblog_file SET registered_end = size, prefix_checksum = checksum WHERE registered_end IS NULL;
CREATE INDEX IF NOT EXISTS weblog_file_first_line ON weblog_file (first_line_hash);
CREATE INDEX IF NOT EXISTS weblog_file_prefix ON weblog_file (prefix_checksum);
CREATE INDEX IF NOT EXISTS weblog_file_seen ON weblog_file (path, size, mtime_ns);

-- A file's byte ranges, cut at line starts, loaded in parallel, each resumable from its last
-- committed chunk. A segment (the lines one registration found, [start, end) of the file) is one
-- load (`load_id`) and one range or more (a gzipped file's segment is one range); parts number
-- the file's ranges in order over all its segments, and line numbers go on from segment to
-- segment, so (file_id, line_number) is unique in weblogs. `first_day` is, until the range is
-- loaded, a conservative guess at its earliest day (UTC) made at registration (the earliest
-- timestamp among its first lines; '-infinity' when none parses: it holds up every report until
-- loaded), lowered to the earliest loaded line's day as chunks commit; `last_day` is the latest
-- loaded line's day. `lines` is how many lines were registered in the range.
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
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS segment integer NOT NULL DEFAULT 0;
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS load_id bigint REFERENCES load (id);
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS lines bigint;
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS first_day date;
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS last_day date;
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS registered_at timestamptz;
ALTER TABLE weblog_range ADD COLUMN IF NOT EXISTS loaded_at timestamptz;
UPDATE weblog_range r SET load_id = f.load_id, registered_at = f.registered_at,
       loaded_at = CASE WHEN r.state = 'done' THEN coalesce(f.loaded_at, r.updated_at) END
FROM weblog_file f WHERE r.file_id = f.id AND r.registered_at IS NULL;
ALTER TABLE weblog_range ALTER COLUMN registered_at SET DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS weblog_range_open ON weblog_range (first_day) WHERE state <> 'done';

-- Files seen under a path that are not (or not all) in the ledger, with why: `refused` (its first
-- line is a ledger file's but the bytes loaded from that file changed: `load_id` is the broken
-- load that says so) or `copy` (the same bytes as ledger file `file_id`, which is still at its own
-- path). Kept per path with the size and modification time it had, so a refusal is recorded once
-- and an unchanged copy is not read again; `run_id` is the last run whose registration saw it.
CREATE TABLE IF NOT EXISTS weblog_seen (
    path     text PRIMARY KEY,
    size     bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    verdict  text NOT NULL CHECK (verdict IN ('refused', 'copy')),
    file_id  bigint REFERENCES weblog_file (id),
    load_id  bigint REFERENCES load (id),
    run_id   bigint,
    seen_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Each file's segments: when each was registered and loaded (NULL while any of its ranges is
-- not), its bytes and lines, and the first and last day of its lines. A report for day D computed
-- before a segment with first_day <= D was loaded is out of date (late data):
--   SELECT c.* FROM report_computed c JOIN weblog_change w
--     ON w.first_day <= c.logical_date AND (w.loaded_at IS NULL OR w.loaded_at > c.computed_at)
--   (for the reports that read the access logs).
--   file_id, name, path  the file, and where it was last seen
--   segment              0 for the lines first registered, then 1, 2, ... as the file grew
--   load_id              the segment's load (loads.load)
--   start_offset, end_offset  its bytes [start, end) (in the decompressed stream when gzipped)
--   first_line, lines    its first line's number and how many lines it has
--   rows_read, rows_loaded, rows_rejected  what its loaded chunks read so far
--   first_day, last_day  its lines' earliest and latest day (UTC; see weblog_range)
--   registered_at, loaded_at  when it was registered, and loaded to its end
CREATE OR REPLACE VIEW weblog_change AS
SELECT f.id AS file_id, f.name, f.path, r.segment, r.load_id,
       min(r.start_offset) AS start_offset, max(r.end_offset) AS end_offset,
       min(r.first_line) AS first_line, sum(r.lines)::bigint AS lines,
       sum(r.rows_read)::bigint AS rows_read, sum(r.rows_loaded)::bigint AS rows_loaded,
       sum(r.rows_rejected)::bigint AS rows_rejected,
       min(r.first_day) AS first_day, max(r.last_day) AS last_day,
       min(r.registered_at) AS registered_at,
       CASE WHEN bool_and(r.state = 'done') THEN max(r.loaded_at) END AS loaded_at
FROM weblog_file f JOIN weblog_range r ON r.file_id = f.id
GROUP BY f.id, f.name, f.path, r.segment, r.load_id;

-- The country names of the IP-to-country table, one row each time a load changed them (a checksum
-- of its distinct (country_code, country_name) pairs). popular-products names its country from the
-- table as it is (an access-log line's country code is fixed when the line is loaded), so a report
-- computed before a later version is shown out of date. The first version changes nothing.
CREATE TABLE IF NOT EXISTS ip2geo_names (
    id          bigserial PRIMARY KEY,
    checksum    text NOT NULL,
    countries   bigint NOT NULL,
    load_id     bigint REFERENCES load (id) ON DELETE SET NULL,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
