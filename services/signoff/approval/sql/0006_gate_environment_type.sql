-- A decision, a cancel and an expiry rebuild the gate from its own columns (key, policy, inputs, directory
-- snapshot), never from the ~3 KB request document: the one thing they still took from it, the type of the
-- environment the gate's stage deploys to (the `environment_type` label of signoff_gate_wait_seconds), becomes a
-- column, filled here for the gates already stored (the same rule as `mapping.environment_type`).
ALTER TABLE "{schema}".gates ADD COLUMN environment_type text NOT NULL DEFAULT 'none'
    CHECK (environment_type IN ('production', 'preproduction', 'none'));
UPDATE "{schema}".gates SET environment_type = CASE
    WHEN request -> 'current_stage' -> 'environments' @> '[{"type": "Production"}]' THEN 'production'
    WHEN request -> 'current_stage' -> 'environments' @> '[{"type": "PreProduction"}]' THEN 'preproduction'
    ELSE 'none' END
WHERE jsonb_typeof(request -> 'current_stage' -> 'environments') = 'array';
