-- The instance that accepted a run. At start an instance marks the runs it left queued or
-- running (it crashed or was killed) as failed, so they stop counting against their users'
-- per-user limit. NULL: a run recorded before this column existed.
ALTER TABLE simulation_schema.simulations ADD COLUMN instance TEXT;
