-- The dispatcher claims due rows oldest first, ties broken by id (`ORDER BY next_attempt_at, id`). The index
-- 0001 created has no id: every row of a consumer batch shares its `next_attempt_at`, so PostgreSQL read every due
-- row of the channel and sorted them all on every claim (21 ms for a claim of 32 among 40,000 due, against 1 ms
-- with this index: the claim cost grew with the backlog it was meant to drain).
CREATE INDEX deliveries_due_order ON "{schema}".deliveries (channel, next_attempt_at, id)
    WHERE status IN ('pending', 'sending');
DROP INDEX "{schema}".deliveries_due;
