-- Approval-page sessions ended by a sign-out, by their session id (the `s` of the signed cookie). The cookie itself
-- is stateless, so a copy of it would stay valid until it runs out: the pages refuse any id listed here. A row is
-- useless once its session would have expired anyway (`expires_at`) and is pruned on the next sign-out.
CREATE TABLE "{schema}".revoked_sessions (
    session_id  text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expiry ON "{schema}".revoked_sessions (expires_at);
