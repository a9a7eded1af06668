-- The W3C traceparent of what started the execution (its ExecutionRequested, or the span that consumed it when
-- tracing is on): what the runner publishes later (approval requests, step changes, the end) continues the run's
-- trace instead of starting one of its own. NULL for executions started before this column existed.
ALTER TABLE "{schema}".executions ADD COLUMN traceparent text;
