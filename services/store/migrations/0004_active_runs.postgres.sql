-- Starting a run counts the user's queued and running runs (the per-user limit). With only the
-- (user_id, created_at) index that count visited every run the user ever made, so starting a
-- run slowed down as history grew. This partial index holds only the active runs.
CREATE INDEX simulations_active ON simulation_schema.simulations (user_id) WHERE status IN ('queued', 'running');
