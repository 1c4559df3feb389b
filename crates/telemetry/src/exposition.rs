//! Parsing the Prometheus text exposition format and OpenMetrics (with exemplars).
