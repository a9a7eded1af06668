-- Answers to requests that carried an Idempotency-Key: a repeat of the key by the same user gets the first answer
-- and records nothing new. `request_digest` tells a repeat from a different request reusing the key.
CREATE TABLE "{schema}".idempotency_keys (
    user_id        text        NOT NULL,
    key            text        NOT NULL,
    request_digest bytea       NOT NULL,
    status_code    int         NOT NULL,
    body           jsonb       NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON "{schema}".idempotency_keys (created_at);

-- Requests refused before they reached the approval service (no or bad credentials), by the gate they named: the
-- api cannot write the approval schema, so a gate's audit trail is this table merged with the approval service's.
CREATE TABLE "{schema}".access_denials (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gate_id    text        NOT NULL,
    reason     text        NOT NULL,
    actor      text,
    credential text,
    detail     jsonb       NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL
);
CREATE INDEX access_denials_gate ON "{schema}".access_denials (gate_id, seq);
