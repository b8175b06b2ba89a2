-- Every shard of every instance reads the sessions revoked since the last one it saw, every
-- auth.revocation_sync (2 s): without this index each read scanned every session.
CREATE INDEX sessions_revoked ON auth_schema.sessions (revoked_at) WHERE revoked_at IS NOT NULL;
