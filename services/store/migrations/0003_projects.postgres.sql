-- Projects (designs with versions and members) and simulation runs.

CREATE TABLE project_schema.projects (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    design TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    template_id TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE project_schema.project_versions (
    project_id TEXT NOT NULL REFERENCES project_schema.projects(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    design TEXT NOT NULL,
    settings TEXT NOT NULL,
    author_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, version)
);
CREATE TABLE project_schema.project_members (
    project_id TEXT NOT NULL REFERENCES project_schema.projects(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON project_schema.project_members (user_id);
CREATE TABLE project_schema.user_templates (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    design TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX user_templates_owner ON project_schema.user_templates (owner_id);

CREATE TABLE simulation_schema.simulations (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    project_version BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    seed BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    report TEXT,
    analysis TEXT
);
CREATE INDEX simulations_project ON simulation_schema.simulations (project_id, created_at);
CREATE INDEX simulations_user ON simulation_schema.simulations (user_id, created_at);
