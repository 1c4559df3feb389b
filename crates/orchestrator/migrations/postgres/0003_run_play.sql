-- How the learner plays the run: guided (the cause-naming title, objectives, dashboards and
-- hints on a timer), investigate or challenge (symptoms only until the debrief).
ALTER TABLE runs ADD COLUMN play TEXT NOT NULL DEFAULT 'guided';
