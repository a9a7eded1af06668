-- The W3C traceparent of the gate event each row came from (the span that consumed it when tracing is on): a
-- delivery's request carries it (a `traceparent` header), and the reminders and escalations planned later from a
-- gate continue its trace. NULL for rows written before these columns existed.
ALTER TABLE "{schema}".gates ADD COLUMN traceparent text;
ALTER TABLE "{schema}".deliveries ADD COLUMN traceparent text;
