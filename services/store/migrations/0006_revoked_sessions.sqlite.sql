-- Every shard of every instance reads the sessions revoked since the last one it saw, every
-- auth.revocation_sync (2 s): without this index each read scanned every session. The query
-- repeats the index's condition (revoked_at IS NOT NULL), which is what SQLite needs to use it.
CREATE INDEX auth_schema.sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
