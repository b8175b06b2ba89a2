-- Starting a run counts the user's queued and running runs (the per-user limit). With only the
-- (user_id, created_at) index that count visited every run the user ever made, so starting a
-- run slowed down as history grew. This partial index holds only the active runs; the count's
-- WHERE clause repeats the index's condition word for word, which is what SQLite needs to use it.
CREATE INDEX simulation_schema.simulations_active ON simulations (user_id) WHERE status IN ('queued', 'running');
