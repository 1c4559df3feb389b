-- Planner statistics for the seeded tables (SQLite twin of migrations/postgres).
ANALYZE;
