-- The W3C traceparent of the request that opened the gate (the span that consumed it when tracing is on): the
-- expiry loop's outcome and the api's decisions continue the run's trace instead of starting one of their own.
-- NULL for gates opened before this column existed.
ALTER TABLE "{schema}".gates ADD COLUMN traceparent text;
