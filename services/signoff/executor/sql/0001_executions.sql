-- Pipeline definitions: the last definition each pipeline identifier was run with (an execution keeps its own copy
-- in its state, so editing a definition never changes a running execution).
CREATE TABLE "{schema}".pipelines (
    identifier  text        PRIMARY KEY,
    name        text        NOT NULL,
    yaml        text        NOT NULL,
    last_sequence bigint    NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL
);

-- Executions: the state machine's JSON (`Execution.to_dict()`) plus the columns the runner selects on.
-- `runnable`: something happened that may let it move on (new, an outcome arrived, a step finished).
-- `wake_at`: the earliest script deadline or wait end, in the executor's (injected) clock.
-- `owner` / `lease_until`: the replica running its scripts and until when (wall clock, renewed while they run);
-- an expired lease means that replica died, and the restart rule applies (docs/pipelines.md, "Restart rule").
CREATE TABLE "{schema}".executions (
    id            text        PRIMARY KEY,
    pipeline_id   text        NOT NULL,
    pipeline_name text        NOT NULL,
    sequence_id   bigint      NOT NULL,
    status        text        NOT NULL CHECK (status IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'ABORTED')),
    reason        text,
    triggered_by  jsonb       NOT NULL,
    state         jsonb       NOT NULL,
    runnable      boolean     NOT NULL DEFAULT true,
    wake_at       timestamptz,
    owner         text,
    lease_until   timestamptz,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executions_pipeline ON "{schema}".executions (pipeline_id, sequence_id DESC);
-- What the runner claims: runnable ones, running ones by deadline, and those whose scripts' replica may be gone.
-- Partial indexes stay small however many executions have ended.
CREATE INDEX executions_runnable ON "{schema}".executions (updated_at) WHERE runnable;
CREATE INDEX executions_running ON "{schema}".executions (wake_at) WHERE status = 'RUNNING';
CREATE INDEX executions_leased ON "{schema}".executions (lease_until) WHERE owner IS NOT NULL;

-- Approval gates of execution steps, learnt from GateOpened (the approval service owns the gates themselves).
CREATE TABLE "{schema}".gates (
    execution_id text        NOT NULL REFERENCES "{schema}".executions (id),
    step_path    text        NOT NULL,
    attempt      int         NOT NULL,
    gate_id      text        NOT NULL,
    token        text        NOT NULL,
    message      text        NOT NULL DEFAULT '',
    opened_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (execution_id, step_path, attempt)
);

-- The output of each script run (its tail), for `signoff executions` and debugging.
CREATE TABLE "{schema}".step_logs (
    execution_id text        NOT NULL REFERENCES "{schema}".executions (id),
    step_path    text        NOT NULL,
    attempt      int         NOT NULL,
    exit_code    int,
    output       text        NOT NULL DEFAULT '',
    at           timestamptz NOT NULL,
    PRIMARY KEY (execution_id, step_path, attempt)
);

-- Execution requests the executor refused (they also go to the dead-letter topic), so `signoff run --wait` can say
-- why instead of waiting for an execution that will never exist.
CREATE TABLE "{schema}".refusals (
    execution_id text        PRIMARY KEY,
    pipeline_id  text        NOT NULL,
    reason       text        NOT NULL,
    error        text        NOT NULL,
    at           timestamptz NOT NULL
);
