-- Lanes: a row belongs to the lane of the consumer loop that wrote it ('main': the role's main loop, the expiry,
-- the executor's runner; 'decisions': the approval role's decisions lane), and each lane has a relay of its own,
-- so a decision's outcome is published without waiting behind a burst's thousands of GateOpened rows.
-- A gate's events share a Kafka key and must reach its partition in order whichever lane wrote them: a relay
-- holds back a row while an older unsent row with the same key waits in another lane (outbox_unsent_key).
ALTER TABLE "{schema}".outbox ADD COLUMN lane text NOT NULL DEFAULT 'main';
DROP INDEX "{schema}".outbox_unsent;
-- A lane's relay claims its own unsent rows in order.
CREATE INDEX outbox_unsent_lane ON "{schema}".outbox (lane, seq) WHERE sent_at IS NULL;
-- "Is an older row with this key still unsent?": one probe per claimed row, however large the backlog.
CREATE INDEX outbox_unsent_key ON "{schema}".outbox (key, seq) WHERE sent_at IS NULL;
