-- The datamart: one table per report, keyed by the logical date it was computed for.
-- Run with search_path set to the datamart schema. Idempotent.

-- monthly-sales: the 12 calendar months before the logical date's month.
CREATE TABLE IF NOT EXISTS monthly_sales (
    logical_date date NOT NULL,
    month        date NOT NULL,
    orders       bigint NOT NULL,
    units        bigint NOT NULL,
    revenue      numeric(16, 2) NOT NULL,
    PRIMARY KEY (logical_date, month)
);

-- popular-devices: the top 5 devices of B2B clients, by distinct client users, then requests.
CREATE TABLE IF NOT EXISTS popular_devices (
    logical_date date NOT NULL,
    rank         integer NOT NULL CHECK (rank BETWEEN 1 AND 5),
    device       text NOT NULL,
    users        bigint NOT NULL,
    requests     bigint NOT NULL,
    PRIMARY KEY (logical_date, rank)
);

-- popular-products: the products with the most units sold to customers of the country with the
-- most distinct users who logged in successfully.
CREATE TABLE IF NOT EXISTS popular_products (
    logical_date date NOT NULL,
    country      text NOT NULL,
    rank         integer NOT NULL CHECK (rank > 0),
    product_id   integer NOT NULL,
    product      text NOT NULL,
    units        bigint NOT NULL,
    revenue      numeric(16, 2) NOT NULL,
    PRIMARY KEY (logical_date, rank)
);
