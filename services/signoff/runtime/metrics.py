"""Prometheus metrics shared by every role (one registry per process; labels say which consumer / schema), and the
view of that registry a role's /metrics serves."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

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

_OWNER: dict[str, str] = {}  # metric family -> the role it belongs to


def role_metrics(role: str, *collectors: Collector) -> None:
    """Declare `collectors` the metrics of `role`. Every process imports every role's modules (the CLI registers all
    roles), so without this each role would also serve the others' metrics, at zero: `signoff_gates_pending 0` on
    the api's /metrics is wrong, not harmless."""
    for collector in collectors:
        for family in collector.describe():
            _OWNER[family.name] = role


class RoleView:
    """The process's registry as role `role` serves it: the runtime's and the process's metrics, and its own
    (no role: everything)."""

    def __init__(self, role: str | None) -> None:
        self.role = role

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if self.role is None or _OWNER.get(family.name, self.role) == self.role:
                yield family
