"""Prometheus metrics shared by every role (one registry per process; labels say which consumer / schema)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("signoff_events_consumed_total", "Records fetched from Kafka.", ["consumer", "topic"])
EVENTS_APPLIED = Counter("signoff_events_applied_total", "Events applied to the database.", ["consumer", "type"])
EVENTS_DUPLICATE = Counter("signoff_events_duplicate_total", "Events skipped as already applied.", ["consumer"])
EVENTS_DEAD_LETTERED = Counter(
    "signoff_events_dead_lettered_total", "Records sent to the dead-letter topic.", ["consumer", "reason"]
)
EVENTS_QUARANTINED = Counter(
    "signoff_events_quarantined_total",
    "Refused records whose dead letter could not be written, kept in the quarantine table instead (reason "
    "`failed`: not even that, logged at critical level).",
    ["consumer", "reason"],
)
BATCH_SECONDS = Histogram(
    "signoff_batch_duration_seconds",
    "Time to apply one fetched batch, from fetch to offset commit.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RETRIES = Counter("signoff_batch_retries_total", "Batches retried after a transient error.", ["consumer"])
CONSUMER_LAG = Gauge(
    "signoff_consumer_lag_records",
    "Records not yet consumed: highwater minus position, per partition.",
    ["consumer", "topic", "partition"],
)
OUTBOX_BACKLOG = Gauge("signoff_outbox_backlog_rows", "Outbox rows not yet published.", ["schema"])
OUTBOX_PUBLISHED = Counter("signoff_outbox_published_total", "Outbox rows published to Kafka.", ["schema"])
