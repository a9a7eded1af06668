"""The notifier's metrics, on the process's prometheus registry (served on /metrics with the runtime's)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from signoff.runtime.metrics import role_metrics

DELIVERIES_SENT = Counter("signoff_notifier_deliveries_sent_total", "Deliveries sent.", ["channel"])
DELIVERIES_RETRIED = Counter(
    "signoff_notifier_deliveries_retried_total", "Failed tries scheduled for another try.", ["channel"]
)
DELIVERIES_DEAD_LETTERED = Counter(
    "signoff_notifier_deliveries_dead_lettered_total",
    "Deliveries given up (last try failed, or a permanent error).",
    ["channel"],
)
DELIVERIES_IN_FLIGHT = Gauge("signoff_notifier_deliveries_in_flight", "Sends in progress.", ["channel"])

role_metrics("notifier", DELIVERIES_SENT, DELIVERIES_RETRIED, DELIVERIES_DEAD_LETTERED, DELIVERIES_IN_FLIGHT)
