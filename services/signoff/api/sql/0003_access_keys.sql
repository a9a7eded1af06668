-- AWS-style access keys (`signoff access-keys create`), for the CodePipeline wire API's Signature Version 4. The
-- server needs the secret itself to verify a signature (SigV4 is an HMAC, not a password check), so it cannot be
-- hashed: it is stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with SIGNOFF_API_CREDENTIALS_KEY, which lives
-- only in the api's settings. A database dump alone reveals no secret.
CREATE TABLE "{schema}".access_keys (
    id                text        PRIMARY KEY CHECK (id ~ '^[A-Z0-9]{20}$'),
    user_id           text        NOT NULL,
    secret_ciphertext bytea       NOT NULL,
    created_at        timestamptz NOT NULL,
    last_used_at      timestamptz,
    revoked_at        timestamptz
);

-- `signoff access-keys list --user U`.
CREATE INDEX access_keys_by_user ON "{schema}".access_keys (user_id, created_at);
