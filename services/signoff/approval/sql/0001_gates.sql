-- Gates: one approval step of one pipeline run. The natural key makes a repeated request the same gate.
CREATE TABLE "{schema}".gates (
    id                text        PRIMARY KEY,
    pipeline_id       text        NOT NULL,
    execution_id      text        NOT NULL,
    stage_id          text        NOT NULL,
    step_id           text        NOT NULL,
    attempt           int         NOT NULL,
    status            text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    token             text        NOT NULL,
    policy            jsonb       NOT NULL,
    inputs            jsonb       NOT NULL DEFAULT '[]',
    pipeline_executor text,
    members_by_group  jsonb       NOT NULL DEFAULT '{}',
    opened_at         timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    closed_at         timestamptz,
    timeout_action    text        NOT NULL,
    request           jsonb       NOT NULL,
    CONSTRAINT gates_natural_key UNIQUE (pipeline_id, execution_id, stage_id, step_id, attempt)
);
-- The expiry loop only looks at pending gates by deadline.
CREATE INDEX gates_pending_expiry ON "{schema}".gates (expires_at) WHERE status = 'pending';
-- CodePipeline-style decisions name pipeline + stage + action (step).
CREATE INDEX gates_step ON "{schema}".gates (pipeline_id, stage_id, step_id, opened_at);

-- Votes: every accepted decision, append-only (`replaced` marks a vote the approver changed later).
CREATE TABLE "{schema}".votes (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gate_id     text        NOT NULL REFERENCES "{schema}".gates (id),
    decision_id text        NOT NULL UNIQUE,
    source      text        NOT NULL,
    approver    text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('approve', 'reject')),
    comment     text        NOT NULL DEFAULT '',
    inputs      jsonb       NOT NULL DEFAULT '{}',
    decided_at  timestamptz NOT NULL,
    at          timestamptz NOT NULL,
    replaced    boolean     NOT NULL DEFAULT false
);
CREATE INDEX votes_gate ON "{schema}".votes (gate_id, seq);

-- Audit trail, append-only: requests, votes, refusals, outcomes, cancels.
CREATE TABLE "{schema}".audit (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gate_id     text,
    kind        text        NOT NULL CHECK (kind IN ('requested', 'vote', 'refused', 'outcome', 'cancel')),
    decision_id text,
    actor       text,
    reason      text,
    detail      jsonb       NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL
);
CREATE INDEX audit_gate ON "{schema}".audit (gate_id, seq);
CREATE INDEX audit_decision ON "{schema}".audit (decision_id) WHERE decision_id IS NOT NULL;

-- The directory of user groups (members with e-mail / chat handles), resolved when a gate opens.
CREATE TABLE "{schema}".directory_members (
    group_name   text  NOT NULL,
    user_id      text  NOT NULL,
    email        text,
    chat_handles jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_name, user_id)
);
