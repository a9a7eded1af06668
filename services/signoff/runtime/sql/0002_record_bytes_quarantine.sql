-- A Kafka key and a header name are bytes: they may hold what text and jsonb cannot (a NUL, invalid UTF-8), and a
-- dead-letter row must copy them as they came. `key` is the exact key published; `aggregateid` stays the key as
-- text for people and Debezium (NULL when the key is not text). Header names are stored base64 like the values.
ALTER TABLE "{schema}".outbox ADD COLUMN key bytea;
UPDATE "{schema}".outbox SET key = convert_to(aggregateid, 'UTF8') WHERE aggregateid IS NOT NULL;
UPDATE "{schema}".outbox o SET headers = (
    SELECT coalesce(
        jsonb_agg(jsonb_build_array(translate(encode(convert_to(h ->> 0, 'UTF8'), 'base64'), E'\n', ''), h -> 1)
                  ORDER BY n),
        '[]'::jsonb)
    FROM jsonb_array_elements(o.headers) WITH ORDINALITY AS t(h, n)
);

-- Quarantine: a refused record the dead-letter path itself could not write (the last resort, so the consumer
-- moves on instead of dying on it forever). Everything Kafka gave us, as bytes, with why it was refused and why
-- the dead letter failed. `id` is the record's dead-letter id (position + digest), also claimed in the inbox.
CREATE TABLE "{schema}".quarantine (
    consumer       text        NOT NULL,
    id             text        NOT NULL,
    topic          text        NOT NULL,
    partition      int         NOT NULL,
    "offset"       bigint      NOT NULL,
    "timestamp"    bigint,
    key            bytea,
    value          bytea,
    header_names   bytea[]     NOT NULL,
    header_values  bytea[]     NOT NULL,
    reason         text        NOT NULL,
    error          text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, id)
);
