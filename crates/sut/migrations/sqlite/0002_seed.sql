-- Seed data (SQLite twin of migrations/postgres): 200 products, 100,000 orders of three items.
INSERT INTO products (id, name, price_cents)
WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 200)
SELECT x, 'Product ' || x, 100 + (x * 37) % 9900 FROM g;

INSERT INTO order_items (order_id, product_id, quantity, price_cents)
WITH RECURSIVE o(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM o WHERE x < 100000),
k(y) AS (SELECT 1 UNION ALL SELECT y + 1 FROM k WHERE y < 3)
SELECT o.x, p.id, 1 + (o.x + k.y) % 3, p.price_cents
FROM o CROSS JOIN k JOIN products p ON p.id = 1 + (o.x * 31 + k.y * 17) % 200;

INSERT INTO orders (id, customer_id, status, total_cents, created_at_ms)
SELECT order_id, 1 + (order_id * 7919) % 10000, 'fulfilled', SUM(quantity * price_cents),
       CAST(strftime('%s', 'now') AS INTEGER) * 1000 - order_id * 1000
FROM order_items GROUP BY order_id;
