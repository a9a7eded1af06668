"""The approval role's metrics: gates opened and closed, votes counted, decisions refused, how long gates wait, and
how many wait now (besides the runtime's consumer and outbox metrics).

Counters count what a transaction did only once it committed: a handler adds to a `Tally`, the consumer loop (or
the expiry loop) commits the tally after the database commit, so a batch that rolls back, is retried or isolated
one event at a time counts once. The gauges are counted in the database (`run_gate_gauges`), so every replica
reports the same totals: aggregate them with `max`, not `sum`.

Cardinality is bounded: `outcome`, `status`, `source`, `reason` and `environment_type` come from closed
vocabularies (sources are the keys of SIGNOFF_DECISION_KEYS: a decision from any other source is refused before it
is counted), and `pipeline` is one of SIGNOFF_METRICS_PIPELINES, or, when that is unset, one of the first
SIGNOFF_METRICS_PIPELINE_LIMIT pipelines this process saw; every other pipeline is `other`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta

import asyncpg
import structlog
from prometheus_client import Counter, Gauge, Histogram

from signoff.approval.domain import events as domain_events
from signoff.approval.mapping import StoredGate
from signoff.approval.repository import ApprovalRepository
from signoff.kernel import DecisionStatus
from signoff.runtime.clock import Clock
from signoff.runtime.metrics import role_metrics

log = structlog.get_logger(__name__)

GATES_OPENED = Counter("signoff_gates_opened_total", "Gates opened (a repeated request for an open gate is not one).")
GATE_OUTCOMES = Counter("signoff_gate_outcomes_total", "Gates closed, by outcome.", ["outcome"])
DECISIONS = Counter(
    "signoff_decisions_total", "Decisions counted as votes, by status and decision source.", ["status", "source"]
)
DECISIONS_REFUSED = Counter(
    "signoff_decisions_refused_total", "Decisions refused (did not count), by reason.", ["reason"]
)
GATE_WAIT_SECONDS = Histogram(
    "signoff_gate_wait_seconds",
    "Time from a gate's opening to its outcome, by outcome, pipeline (bounded: `other` beyond the allowed ones) and "
    "the type of the environment its stage deploys to.",
    ["outcome", "pipeline", "environment_type"],
    # A minute to a week: people answer in minutes to days; a gate waits at most SIGNOFF_MAX_TIMEOUT.
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600, 604800),
)
GATES_PENDING = Gauge(
    "signoff_gates_pending", "Gates waiting for a decision now, counted in the database (every replica: use max)."
)
GATES_EXPIRING = Gauge(
    "signoff_gates_expiring_soon",
    "Pending gates whose deadline is within SIGNOFF_METRICS_EXPIRING_WITHIN, counted in the database.",
)

role_metrics(
    "approval",
    GATES_OPENED,
    GATE_OUTCOMES,
    DECISIONS,
    DECISIONS_REFUSED,
    GATE_WAIT_SECONDS,
    GATES_PENDING,
    GATES_EXPIRING,
)

OTHER = "other"
"""The `pipeline` label of every pipeline beyond the allowed ones."""

_OUTCOMES: dict[type, str] = {
    domain_events.GateApproved: "approved",
    domain_events.GateRejected: "rejected",
    domain_events.GateExpired: "expired",
    domain_events.GateCancelled: "cancelled",
}
_STATUSES = {DecisionStatus.APPROVE: "approved", DecisionStatus.REJECT: "rejected"}


class GateMetrics:
    """The approval role's counters and the bounded `pipeline` label (one per process)."""

    def __init__(self, pipelines: Collection[str] = (), pipeline_limit: int = 50) -> None:
        """`pipelines`: the pipeline ids labelled by name (every other is `other`); when empty, the first
        `pipeline_limit` pipelines seen are."""
        self._allowed = frozenset(pipelines)
        self._limit = pipeline_limit
        self._seen: set[str] = set()

    def pipeline_label(self, pipeline_id: str) -> str:
        """`pipeline_id` itself when it may be a label value, else `other`."""
        if self._allowed:
            return pipeline_id if pipeline_id in self._allowed else OTHER
        if pipeline_id in self._seen:
            return pipeline_id
        if len(self._seen) < self._limit:
            self._seen.add(pipeline_id)
            return pipeline_id
        return OTHER

    def tally(self) -> Tally:
        """An empty tally for one transaction."""
        return Tally(self)


class Tally:
    """What one transaction did to gates, counted only by `commit()` (once the transaction committed)."""

    def __init__(self, metrics: GateMetrics) -> None:
        self._metrics = metrics
        self._pending: list[Callable[[], None]] = []

    def events(self, stored: StoredGate, events: Sequence[domain_events.GateEvent]) -> None:
        """Count the gate events `events` of `stored` (opened, votes, refusals, the outcome)."""
        for event in events:
            if isinstance(event, domain_events.GateOpened):
                self._pending.append(GATES_OPENED.inc)
            elif isinstance(event, domain_events.VoteRecorded):
                vote = stored.gate.vote(event.decision_id)
                assert vote is not None  # the event records this vote
                self._pending.append(DECISIONS.labels(_STATUSES[event.status], vote.source).inc)
            elif isinstance(event, domain_events.DecisionRefused):
                self.refused(event.reason.value)
            elif (outcome := _OUTCOMES.get(type(event))) is not None:
                waited = max(0.0, (event.at - stored.gate.opened_at).total_seconds())
                labels = (outcome, self._metrics.pipeline_label(stored.gate.key.pipeline))
                self._pending.append(GATE_OUTCOMES.labels(outcome).inc)
                histogram = GATE_WAIT_SECONDS.labels(*labels, stored.environment_type)
                self._pending.append(lambda h=histogram, w=waited: h.observe(w))

    def refused(self, reason: str) -> None:
        """Count a decision refused for `reason` (a `RefusalReason` value)."""
        self._pending.append(DECISIONS_REFUSED.labels(reason).inc)

    def commit(self) -> None:
        """Count everything tallied (call it after the transaction committed; a second call counts nothing)."""
        pending, self._pending = self._pending, []
        for count in pending:
            count()


async def refresh_gate_gauges(
    pool: asyncpg.Pool, clock: Clock, *, within: timedelta, repository: ApprovalRepository
) -> tuple[int, int]:
    """Count pending gates, and those of them due within `within`, into the gauges; returns both counts."""
    async with pool.acquire() as conn:
        pending, expiring = await repository.pending_counts(conn, clock.now() + within)
    GATES_PENDING.set(pending)
    GATES_EXPIRING.set(expiring)
    return pending, expiring


async def run_gate_gauges(
    pool: asyncpg.Pool,
    clock: Clock,
    stopping: asyncio.Event,
    *,
    interval: float,
    within: timedelta,
    repository: ApprovalRepository,
) -> None:
    """Refresh the gauges every `interval` seconds until `stopping` is set. A scrape reads the last counts (at most
    `interval` old) instead of querying the database: many scrapers, or a slow database, never add load."""
    while not stopping.is_set():
        try:
            await refresh_gate_gauges(pool, clock, within=within, repository=repository)
        except Exception as exc:  # the database away: keep the last counts, try again at the next tick
            log.warning("gate_gauges_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
