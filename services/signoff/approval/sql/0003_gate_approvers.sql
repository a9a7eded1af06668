-- Who may decide each pending gate, one row per eligible person (group members and listed users, the banned
-- pipeline executor left out), written when the gate opens and removed when it closes. It makes "the gates I may
-- decide now" (the api's `GET /gates?mine=true`) one index range scan, newest first, however many gates are pending.
CREATE TABLE "{schema}".gate_approvers (
    user_key  text        NOT NULL,
    opened_at timestamptz NOT NULL,
    gate_id   text        NOT NULL,
    PRIMARY KEY (user_key, opened_at, gate_id)
);
CREATE INDEX gate_approvers_gate ON "{schema}".gate_approvers (gate_id);
-- The api lists gates newest first, by status.
CREATE INDEX gates_status_opened ON "{schema}".gates (status, opened_at DESC, id);

-- What a list of gates shows, as plain columns: a list never reads (nor detoasts) the ~3 KB request document.
ALTER TABLE "{schema}".gates
    ADD COLUMN pipeline_name text NOT NULL DEFAULT '',
    ADD COLUMN stage_name    text NOT NULL DEFAULT '',
    ADD COLUMN step_name     text NOT NULL DEFAULT '',
    ADD COLUMN environments  text[] NOT NULL DEFAULT '{}';
