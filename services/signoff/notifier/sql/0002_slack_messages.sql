-- Slack bot mode: the message posted for a gate on a channel (its Slack channel id and `ts`), so later events of
-- the gate update it in place (`chat.update`) instead of posting anew. `updated_by` is the last delivery applied:
-- an older update that arrives late (a retry) is skipped rather than undo a newer one.
CREATE TABLE "{schema}".slack_messages (
    gate_id        text        NOT NULL,
    channel        text        NOT NULL,
    slack_channel  text        NOT NULL,
    ts             text        NOT NULL,
    posted_at      timestamptz NOT NULL,
    updated_by     bigint,
    updated_at     timestamptz,
    PRIMARY KEY (gate_id, channel)
);

-- The current vote of each approver of a pending gate (VoteRecorded), shown in the updated message.
ALTER TABLE "{schema}".gates ADD COLUMN votes jsonb NOT NULL DEFAULT '[]';
