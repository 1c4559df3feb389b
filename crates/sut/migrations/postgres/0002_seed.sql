-- Seed data large enough that a missing index is felt: 200 products, 100,000 orders of three
-- items each (300,000 rows in order_items).
INSERT INTO products (id, name, price_cents)
SELECT g, 'Product ' || g, 100 + (g * 37) % 9900 FROM generate_series(1, 200) AS g;

INSERT INTO order_items (order_id, product_id, quantity, price_cents)
SELECT o, p.id, 1 + (o + k) % 3, p.price_cents
FROM generate_series(1, 100000) AS o
CROSS JOIN generate_series(1, 3) AS k
JOIN products p ON p.id = 1 + (o * 31 + k * 17) % 200;

INSERT INTO orders (id, customer_id, status, total_cents, created_at_ms)
SELECT i.order_id, 1 + (i.order_id * 7919) % 10000, 'fulfilled', SUM(i.quantity * i.price_cents),
       (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - i.order_id * 1000
FROM order_items i GROUP BY i.order_id;

SELECT setval('orders_id_seq', 100000);
