-- Sweeps: one design run over a grid of parameter values, each point a run of its own.
-- `spec` is the request as JSON (parameters, slo_p99_ms, duration_s, seed); `points_done` is
-- the table so far as JSON (one entry per grid point, null until that point has ended), written
-- only by the instance driving the sweep; `knee` indexes it once the sweep has completed.
CREATE TABLE simulation_schema.sweeps (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    project_version BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    points BIGINT NOT NULL,
    points_done TEXT NOT NULL,
    knee BIGINT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT,
    instance TEXT
);
CREATE INDEX sweeps_user ON simulation_schema.sweeps (user_id, created_at);
-- The per-user limit counts a user's running sweeps (with their runs) at every start.
CREATE INDEX sweeps_active ON simulation_schema.sweeps (user_id) WHERE status = 'running';
-- A run that is a point of a sweep names it, and its place in the grid.
ALTER TABLE simulation_schema.simulations ADD COLUMN sweep_id TEXT;
ALTER TABLE simulation_schema.simulations ADD COLUMN sweep_index BIGINT;
CREATE INDEX simulations_sweep ON simulation_schema.simulations (sweep_id) WHERE sweep_id IS NOT NULL;
