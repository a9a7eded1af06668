-- Gates the notifier has been told about: the GateOpened data (to tell the same recipients about the outcome, and
-- to restate it in reminders) and whether the gate is still pending.
CREATE TABLE "{schema}".gates (
    gate_id     text        PRIMARY KEY,
    event_id    text        NOT NULL,
    opened      jsonb       NOT NULL,
    opened_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    status      text        NOT NULL DEFAULT 'pending',
    closed_at   timestamptz
);

-- Deliveries: one row per gate event x channel x recipient (one per channel for slack / teams / webhook / log),
-- the rendered message included, so a retry sends the same bytes under the same idempotency key.
CREATE TABLE "{schema}".deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  text        NOT NULL UNIQUE,
    gate_id          text        NOT NULL,
    event_id         text        NOT NULL,
    kind             text        NOT NULL,
    purpose          text        NOT NULL DEFAULT '',
    channel          text        NOT NULL,
    channel_type     text        NOT NULL,
    recipient        text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    attempts         int         NOT NULL DEFAULT 0,
    max_attempts     int         NOT NULL,
    -- When the next try is due; while `sending`, when the lease of the replica trying it ends.
    next_attempt_at  timestamptz NOT NULL,
    content_type     text        NOT NULL,
    subject          text,
    body             text        NOT NULL,
    html             text,
    headers          jsonb       NOT NULL DEFAULT '[]',
    last_error       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    sent_at          timestamptz
);
-- The dispatcher claims due rows per channel, oldest due first.
CREATE INDEX deliveries_due ON "{schema}".deliveries (channel, next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX deliveries_gate ON "{schema}".deliveries (gate_id, id);

-- Reminders and escalations still to send, by due time.
CREATE TABLE "{schema}".schedule (
    gate_id  text        NOT NULL REFERENCES "{schema}".gates (gate_id),
    purpose  text        NOT NULL,
    due_at   timestamptz NOT NULL,
    status   text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'cancelled')),
    done_at  timestamptz,
    PRIMARY KEY (gate_id, purpose)
);
CREATE INDEX schedule_due ON "{schema}".schedule (due_at) WHERE status = 'pending';
