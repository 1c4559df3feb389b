-- The shop's schema. Money is in cents and times are milliseconds since the Unix epoch, so the
-- same queries read the same types on PostgreSQL and SQLite.
CREATE TABLE products (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL
);

CREATE TABLE orders (
    id BIGSERIAL PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);

CREATE TABLE order_items (
    id BIGSERIAL PRIMARY KEY,
    order_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    price_cents BIGINT NOT NULL
);
-- The index the "full scan" query mode defeats.
CREATE INDEX order_items_order_idx ON order_items (order_id);

-- The fulfilment queue the worker drains (FOR UPDATE SKIP LOCKED).
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    order_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    traceparent TEXT,
    enqueued_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT
);
CREATE INDEX jobs_queued_idx ON jobs (id) WHERE status = 'queued';
