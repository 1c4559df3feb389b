-- How long a verify run keeps the fault once the criteria break (`verify --hold`), seconds of
-- wall-clock time; 0 applies the reference fix at once.
ALTER TABLE runs ADD COLUMN hold_s DOUBLE PRECISION NOT NULL DEFAULT 0.0;
