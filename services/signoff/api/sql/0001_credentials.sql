-- Credentials of the api role. An API token is stored only as the SHA-256 digest of its text: the token is 32
-- random bytes (secrets.token_urlsafe), so nobody can guess a preimage, and a fast unsalted hash is enough (a slow
-- password hash protects low-entropy secrets; GitHub stores its tokens the same way). The text itself is shown
-- once, when the token is created, and kept nowhere.
CREATE TABLE "{schema}".tokens (
    id           text        PRIMARY KEY,
    user_id      text        NOT NULL,
    name         text        NOT NULL,
    token_digest bytea       NOT NULL UNIQUE CHECK (octet_length(token_digest) = 32),
    permissions  text[]      NOT NULL DEFAULT '{}' CHECK (permissions <@ ARRAY['admin', 'act_on_behalf']::text[]),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK (expires_at > created_at)
);

-- `signoff tokens list --user U`.
CREATE INDEX tokens_by_user ON "{schema}".tokens (user_id, created_at);
