-- Access-token signing keys (Ed25519), shared by every instance of one deployment.
CREATE TABLE auth_schema.signing_keys (
    kid TEXT PRIMARY KEY,
    private_pkcs8 BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    -- Signs from this time on (published before, so every instance knows it first).
    active_from BIGINT NOT NULL
);
