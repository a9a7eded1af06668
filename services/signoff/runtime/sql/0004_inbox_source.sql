-- The inbox remembers an event by its source and id, as CloudEvents defines its identity ("source + id is unique
-- for each distinct event"): two producers may both number their events 1, 2, 3, and the second's were skipped as
-- duplicates of the first's. A row written before this migration has source '' (dead letters have it too, their
-- ids are positions): an event whose id such a row holds is still a duplicate (the consumer's insert checks).
ALTER TABLE "{schema}".inbox ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE "{schema}".inbox ALTER COLUMN source DROP DEFAULT;
ALTER TABLE "{schema}".inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE "{schema}".inbox ADD PRIMARY KEY (consumer, event_id, source);
