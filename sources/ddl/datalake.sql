-- The datalake: the B2B platform's tables, the IP-to-country ranges and the parsed access logs.
-- Run with search_path set to the datalake schema (the worker does; by hand:
--   psql -c 'CREATE SCHEMA IF NOT EXISTS datalake' -c 'SET search_path TO datalake' -f sources/ddl/datalake.sql).
-- Every statement is idempotent, so running the file twice is harmless.

-- A company of the platform, identified by its CUIT (Argentine tax id, NN-NNNNNNNN-N).
-- Suppliers are companies that expose products.
CREATE TABLE IF NOT EXISTS company (
    cuit        text PRIMARY KEY CHECK (cuit ~ '^[0-9]{2}-[0-9]{8}-[0-9]$'),
    name        text NOT NULL CHECK (name <> ''),
    is_supplier boolean NOT NULL
);

-- A product, exposed by its supplier with a default price.
CREATE TABLE IF NOT EXISTS product (
    id            integer PRIMARY KEY CHECK (id > 0),
    supplier_cuit text NOT NULL REFERENCES company (cuit),
    name          text NOT NULL CHECK (name <> ''),
    default_price numeric(12, 2) NOT NULL CHECK (default_price >= 0)
);

-- Each company's catalog: the products it sells, at its own price, with its stock.
CREATE TABLE IF NOT EXISTS inventory (
    company_cuit text NOT NULL REFERENCES company (cuit),
    product_id   integer NOT NULL REFERENCES product (id),
    price        numeric(12, 2) NOT NULL CHECK (price >= 0),
    stock        integer NOT NULL CHECK (stock >= 0),
    PRIMARY KEY (company_cuit, product_id)
);

-- An end customer (a person). `username` is the account the customer signs in with on the
-- platform's web site; the access logs carry it.
CREATE TABLE IF NOT EXISTS customer (
    document_number text PRIMARY KEY CHECK (document_number <> ''),
    full_name       text NOT NULL CHECK (full_name <> ''),
    date_of_birth   date NOT NULL,
    address         text NOT NULL,
    country_code    char(2) NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    username        text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9._-]+$')
);

-- An order a company placed for one of its customers.
CREATE TABLE IF NOT EXISTS orders (
    id                bigint PRIMARY KEY CHECK (id > 0),
    company_cuit      text NOT NULL REFERENCES company (cuit),
    customer_document text NOT NULL REFERENCES customer (document_number),
    ordered_at        timestamp NOT NULL
);

-- The line items of an order.
CREATE TABLE IF NOT EXISTS sales (
    order_id   bigint NOT NULL REFERENCES orders (id),
    line       integer NOT NULL CHECK (line > 0),
    product_id integer NOT NULL REFERENCES product (id),
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    total      numeric(14, 2) NOT NULL CHECK (total >= 0),
    PRIMARY KEY (order_id, line)
);
CREATE INDEX IF NOT EXISTS sales_product ON sales (product_id);

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
