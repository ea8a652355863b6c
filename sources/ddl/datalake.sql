-- The datalake: the B2B platform's tables, the IP-to-country ranges and the parsed access logs.
-- Run with search_path set to the datalake schema (the worker does; by hand:
--   psql -c 'CREATE SCHEMA IF NOT EXISTS datalake' -c 'SET search_path TO datalake' -f sources/ddl/datalake.sql).
-- Every statement is idempotent, so running the file twice is harmless.

-- The B2B platform's dimensions keep their history (a slowly changing dimension, type 2): a row
-- is one version of a company, product, catalog row or customer, valid from `valid_from` (its first
-- day) until the day before `valid_to` ('infinity' for the current version). The version valid on
-- day D is the one with valid_from <= D < valid_to. The b2b load merges each day's export into
-- them (see Sources/Tasks/B2B/B2BLoad.swift); facts (orders, sales) accumulate by export day.
-- References between these tables are checked by the load, row by row against the versions valid
-- on the export's day (a foreign key cannot point at one version of a key), so bad rows are
-- rejected with their reason instead of failing the load.

-- Tables of the first layout (replaced whole on every run, without history) are dropped once, so
-- that the history can start; their data was only ever the last run's.
DO $$
BEGIN
    IF to_regclass('company') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'company' AND column_name = 'valid_from'
    ) THEN
        DROP TABLE IF EXISTS sales, orders, inventory, customer, product, company CASCADE;
    END IF;
END
$$;

-- A company of the platform, identified by its CUIT (Argentine tax id, NN-NNNNNNNN-N).
-- Suppliers are companies that expose products.
CREATE TABLE IF NOT EXISTS company (
    cuit        text NOT NULL CHECK (cuit ~ '^[0-9]{2}-[0-9]{8}-[0-9]$'),
    name        text NOT NULL CHECK (name <> ''),
    is_supplier boolean NOT NULL,
    valid_from  date NOT NULL,
    valid_to    date NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (cuit, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE UNIQUE INDEX IF NOT EXISTS company_current ON company (cuit) WHERE valid_to = 'infinity';

-- A product, exposed by its supplier with a default price.
CREATE TABLE IF NOT EXISTS product (
    id            integer NOT NULL CHECK (id > 0),
    supplier_cuit text NOT NULL,
    name          text NOT NULL CHECK (name <> ''),
    default_price numeric(12, 2) NOT NULL CHECK (default_price >= 0),
    valid_from    date NOT NULL,
    valid_to      date NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (id, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE UNIQUE INDEX IF NOT EXISTS product_current ON product (id) WHERE valid_to = 'infinity';

-- Each company's catalog: the products it sells, at its own price, with its stock. A row removed
-- from the catalog gets its end date (valid_to).
CREATE TABLE IF NOT EXISTS inventory (
    company_cuit text NOT NULL,
    product_id   integer NOT NULL,
    price        numeric(12, 2) NOT NULL CHECK (price >= 0),
    stock        integer NOT NULL CHECK (stock >= 0),
    valid_from   date NOT NULL,
    valid_to     date NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (company_cuit, product_id, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE UNIQUE INDEX IF NOT EXISTS inventory_current ON inventory (company_cuit, product_id)
    WHERE valid_to = 'infinity';

-- An end customer (a person). `username` is the account the customer signs in with on the
-- platform's web site; the access logs carry it. Unique among current customers.
CREATE TABLE IF NOT EXISTS customer (
    document_number text NOT NULL CHECK (document_number <> ''),
    full_name       text NOT NULL CHECK (full_name <> ''),
    date_of_birth   date NOT NULL,
    address         text NOT NULL,
    country_code    char(2) NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    username        text NOT NULL CHECK (username ~ '^[a-z0-9._-]+$'),
    valid_from      date NOT NULL,
    valid_to        date NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (document_number, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE UNIQUE INDEX IF NOT EXISTS customer_current ON customer (document_number) WHERE valid_to = 'infinity';
CREATE UNIQUE INDEX IF NOT EXISTS customer_current_username ON customer (username) WHERE valid_to = 'infinity';

-- An order a company placed for one of its customers, from the export of the day it was placed
-- (`export_day`; a re-exported day replaces that day's orders and sales only).
CREATE TABLE IF NOT EXISTS orders (
    id                bigint PRIMARY KEY CHECK (id > 0),
    company_cuit      text NOT NULL,
    customer_document text NOT NULL,
    ordered_at        timestamp NOT NULL,
    export_day        date NOT NULL,
    CHECK (ordered_at >= export_day AND ordered_at < export_day + 1)
);
-- A day's facts are found by their export day (a re-exported day is deleted and loaded again).
-- Days load in order, so a day's rows sit together: a BRIN index finds them at next to no cost per
-- inserted row, where a btree on export_day took a quarter of the initial load's insert time.
DROP INDEX IF EXISTS orders_export_day;
CREATE INDEX IF NOT EXISTS orders_export_day_brin ON orders USING brin (export_day);

-- The line items of an order (from the same day's export).
CREATE TABLE IF NOT EXISTS sales (
    order_id   bigint NOT NULL,
    line       integer NOT NULL CHECK (line > 0),
    product_id integer NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    total      numeric(14, 2) NOT NULL CHECK (total >= 0),
    export_day date NOT NULL,
    PRIMARY KEY (order_id, line)
);
DROP INDEX IF EXISTS sales_export_day;
CREATE INDEX IF NOT EXISTS sales_export_day_brin ON sales USING brin (export_day);

-- IPv4 ranges and their country, in the shape of IP2Location LITE DB1.
CREATE TABLE IF NOT EXISTS ip2geo (
    ip_from      bigint PRIMARY KEY CHECK (ip_from BETWEEN 0 AND 4294967295),
    ip_to        bigint NOT NULL CHECK (ip_to BETWEEN ip_from AND 4294967295),
    country_code char(2) NOT NULL,
    country_name text NOT NULL
);

-- One row per accepted access-log line. (file_id, line_number) is the line's position, so a line
-- can never be stored twice.
CREATE TABLE IF NOT EXISTS weblogs (
    file_id      bigint NOT NULL,
    line_number  bigint NOT NULL,
    client_ip    text NOT NULL,
    username     text,
    requested_at timestamptz NOT NULL,
    method       text,
    path         text,
    status       smallint NOT NULL,
    bytes        bigint,
    referer      text,
    user_agent   text,
    device       text NOT NULL,
    os           text NOT NULL,
    country_code char(2),
    PRIMARY KEY (file_id, line_number)
);
