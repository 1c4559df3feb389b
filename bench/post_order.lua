-- wrk script: POST /api/orders, placing the same small order each time.
wrk.method = "POST"
wrk.path = "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id": 42, "items": [{"product_id": 7, "quantity": 2}]}'
