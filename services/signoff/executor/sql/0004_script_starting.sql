-- A script's row is written before its process is spawned (host, pid and started follow once it runs), so a
-- replica resuming an execution can tell a script that may have run (a row: the restart rule) from one that never
-- started (no row: it waited for a script slot, and is queued again).
ALTER TABLE "{schema}".script_processes
    ALTER COLUMN host DROP NOT NULL,
    ALTER COLUMN pid DROP NOT NULL,
    ALTER COLUMN started DROP NOT NULL;
