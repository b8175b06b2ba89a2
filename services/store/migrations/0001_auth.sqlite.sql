-- The auth service's tables (SQLite dialect: a foreign key names a table of its own database).
-- The schemas are attached database files (see src/sqlite.rs).

CREATE TABLE auth_schema.users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    first_failed_at BIGINT,
    locked_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE auth_schema.roles (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE auth_schema.permissions (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE auth_schema.role_permissions (
    role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    permission TEXT NOT NULL REFERENCES permissions(name) ON DELETE CASCADE,
    PRIMARY KEY (role, permission)
);
CREATE TABLE auth_schema.user_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role)
);
CREATE TABLE auth_schema.sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    user_agent TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT ''
);
CREATE INDEX auth_schema.sessions_user ON sessions (user_id);
CREATE TABLE auth_schema.refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    family TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX auth_schema.refresh_tokens_family ON refresh_tokens (family);
CREATE TABLE auth_schema.one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE auth_schema.outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0
);
INSERT INTO auth_schema.roles (name, description) VALUES
    ('admin', 'Operators: every permission'),
    ('user', 'Registered users');
INSERT INTO auth_schema.permissions (name, description) VALUES
    ('project:read', 'Read projects shared with the user'),
    ('project:write', 'Create and change projects'),
    ('simulation:start', 'Start simulations'),
    ('admin:publish', 'Publish on any bus channel'),
    ('admin:users', 'Manage users and roles');
INSERT INTO auth_schema.role_permissions (role, permission) VALUES
    ('user', 'project:read'), ('user', 'project:write'), ('user', 'simulation:start'),
    ('admin', 'project:read'), ('admin', 'project:write'), ('admin', 'simulation:start'),
    ('admin', 'admin:publish'), ('admin', 'admin:users');
