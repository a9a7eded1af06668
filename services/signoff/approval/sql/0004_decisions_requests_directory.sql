-- Every decision id whose signature checked out, counted or refused: a replay of any of them is a duplicate, not a
-- vote (a refused `invalid_inputs` decision re-sent after another approver supplied the input must not count).
-- Decisions that failed the signature check are not remembered: anyone could send those, and remembering their ids
-- would let a forger burn the id of a real decision before it arrives.
CREATE TABLE "{schema}".decisions_seen (
    decision_id text        PRIMARY KEY,
    source      text        NOT NULL,
    gate_id     text,
    seen_at     timestamptz NOT NULL
);
INSERT INTO "{schema}".decisions_seen (decision_id, source, gate_id, seen_at)
SELECT decision_id, source, gate_id, at FROM "{schema}".votes ON CONFLICT DO NOTHING;

-- A request the service cannot serve opens no gate; its refusal (RequestRefused) is audited with the reasons.
ALTER TABLE "{schema}".audit DROP CONSTRAINT audit_kind_check;
ALTER TABLE "{schema}".audit ADD CONSTRAINT audit_kind_check
    CHECK (kind IN ('requested', 'vote', 'refused', 'outcome', 'cancel', 'request_refused'));

-- The directory file (SIGNOFF_DIRECTORY_FILE) last loaded, by digest of its members: a restart loads the file again
-- only when it changed, so `signoff groups load --merge` (or a replace) is not undone by the next restart.
CREATE TABLE "{schema}".directory_source (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    digest     text        NOT NULL,
    loaded_at  timestamptz NOT NULL
);
