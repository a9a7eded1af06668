"""Prometheus metrics of the api role (on its /metrics, like every role's). Routes are templates
(`/api/v1/gates/{gate_id}`), never raw paths, so the label set stays bounded."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from signoff.runtime.metrics import role_metrics

REQUESTS = Counter(
    "signoff_api_requests_total", "HTTP requests answered, by route template and status.", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "signoff_api_request_duration_seconds",
    "Time to answer an HTTP request (decisions include the wait for the approval service's verdict).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECISIONS = Counter(
    "signoff_api_decisions_total",
    "Decisions the api sent to the approval service (an idempotent repeat is not sent again), by decision source, "
    "status and the verdict it answered with: counted, refused, or pending (no verdict within the wait).",
    ["source", "status", "verdict"],
)
DECISIONS_REFUSED = Counter(
    "signoff_api_decisions_refused_total",
    "Decisions the api sent that the approval service refused, by reason.",
    ["reason"],
)
AUTHENTICATION_FAILURES = Counter(
    "signoff_api_authentication_failures_total", "Requests refused for their credentials, by reason.", ["reason"]
)

role_metrics("api", REQUESTS, REQUEST_SECONDS, DECISIONS, DECISIONS_REFUSED, AUTHENTICATION_FAILURES)
