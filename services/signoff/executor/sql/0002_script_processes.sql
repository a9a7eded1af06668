-- The process of each running script, so a replica that resumes an execution after its owner's lease ran out can
-- make sure the earlier attempt is gone before it starts another: on the same host (`host` = hostname + boot id)
-- it kills the process group if that pid still is the same process (`started`: its start time in clock ticks,
-- so a reused pid is never killed). Elsewhere the owner fenced itself: it kills its scripts when it cannot renew
-- its lease, and they die with it (parent-death signal) when it dies.
CREATE TABLE "{schema}".script_processes (
    execution_id text        NOT NULL REFERENCES "{schema}".executions (id),
    step_path    text        NOT NULL,
    attempt      int         NOT NULL,
    owner        text        NOT NULL,
    host         text        NOT NULL,
    pid          int         NOT NULL,
    started      bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step_path, attempt)
);
