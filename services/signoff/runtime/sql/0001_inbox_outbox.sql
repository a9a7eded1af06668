-- Inbox: one row per (consumer, event id) applied, written in the same transaction as the state change.
-- A conflict on the primary key means the event was applied already: a duplicate, skipped.
CREATE TABLE "{schema}".inbox (
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    "offset"    bigint      NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX ON "{schema}".inbox (received_at);

-- Outbox, in the shape Debezium's outbox event router reads (id, aggregatetype -> topic, aggregateid -> key,
-- type, payload), so a Debezium connector could replace our relay without a schema change.
-- payload is the exact Kafka record value (bytes), headers a JSON list of [name, base64 value] pairs.
CREATE TABLE "{schema}".outbox (
    seq           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text        NOT NULL UNIQUE,
    aggregatetype text        NOT NULL,
    aggregateid   text,
    type          text        NOT NULL,
    payload       bytea       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
-- The relay only ever looks at unsent rows, in order: a small partial index stays small however long the table.
CREATE INDEX outbox_unsent ON "{schema}".outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX ON "{schema}".outbox (sent_at) WHERE sent_at IS NOT NULL;
