-- The scenario catalogue as last loaded, runs and their events.
CREATE TABLE catalogue (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    difficulty TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    loaded_at_ms BIGINT NOT NULL
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    scenario_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    mode TEXT NOT NULL,
    time_scale DOUBLE PRECISION NOT NULL,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    fault_at_ms BIGINT,
    ended_at_ms BIGINT
);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id),
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    data TEXT NOT NULL
);

CREATE INDEX events_by_run ON events (run_id, id);
