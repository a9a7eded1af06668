-- Slack interactions already handled, by the SHA-256 of their signed base string (`v0:<timestamp>:<body>`): the
-- same signed request again (a replay within Slack's 5-minute signature window) is acknowledged and ignored.
-- Rows older than the window are useless (the signature check refuses those requests) and pruned on insert.
CREATE TABLE "{schema}".slack_interactions (
    digest       bytea       PRIMARY KEY,
    received_at  timestamptz NOT NULL
);
CREATE INDEX slack_interactions_age ON "{schema}".slack_interactions (received_at);
