"""The expiry loop: every few seconds, apply the timeout action of pending gates whose deadline passed.

Each pass claims due gates with FOR UPDATE SKIP LOCKED in one transaction, applies `gate.expire(now)`, stores the
outcome and writes its events to the outbox in that same transaction: several replicas can run it at once, each
gate is expired exactly once, and nothing is published (or counted in the metrics) unless the new status is
committed. The outcome continues the trace of the run that requested the gate (stored with it).
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from signoff.approval.cdevents import ApprovalLinks
from signoff.approval.metrics import GateMetrics
from signoff.approval.repository import ApprovalRepository
from signoff.approval.unit_of_work import ApprovalUnitOfWork, Cause
from signoff.runtime import tracing
from signoff.runtime.clock import Clock
from signoff.runtime.consumer import UnitOfWork
from signoff.runtime.outbox import OutboxWriter

log = structlog.get_logger(__name__)


async def expire_due(
    pool: asyncpg.Pool,
    clock: Clock,
    *,
    links: ApprovalLinks,
    repository: ApprovalRepository | None = None,
    metrics: GateMetrics | None = None,
    limit: int = 500,
) -> int:
    """One pass: expire up to `limit` due gates; returns how many were closed. `links`: where the CDEvents of
    the outcomes point."""
    repository = repository or ApprovalRepository()
    now = clock.now()
    async with pool.acquire() as conn:
        async with conn.transaction():
            tx = UnitOfWork(conn=conn, outbox=OutboxWriter(repository.schema))
            work = ApprovalUnitOfWork(tx, repository, links=links, metrics=metrics or GateMetrics())
            closed = 0
            for stored in await work.due(now, limit):
                # The outcome continues the run's trace (stored with the gate), under a span of this pass.
                attributes = {"signoff.gate_id": stored.id}
                with tracing.span("approval expire", parent=stored.traceparent, attributes=attributes):
                    cause = Cause(tracing.current_traceparent(stored.traceparent))
                    work.caused_by(stored, cause)
                    events = stored.gate.expire(now)
                    closed += bool(events)
                    await work.supersede_older(stored, events, now, cause)  # auto-approved: approved too
            await work.commit()
            await tx.outbox.flush(conn)
        for counted in tx.after_commit:
            counted()
    if closed:
        log.info("gates_expired", count=closed)
    return closed


async def run_expiry(
    pool: asyncpg.Pool,
    clock: Clock,
    stopping: asyncio.Event,
    *,
    links: ApprovalLinks,
    interval: float = 5.0,
    repository: ApprovalRepository | None = None,
    metrics: GateMetrics | None = None,
) -> None:
    """Expire due gates every `interval` seconds until `stopping` is set; transient failures are logged and retried
    at the next tick (a gate not expired now is expired later: outcomes use the deadline, not the sweep time)."""
    while not stopping.is_set():
        try:
            while (
                await expire_due(pool, clock, links=links, repository=repository, metrics=metrics)
                and not stopping.is_set()
            ):
                pass
        except Exception as exc:
            log.warning("expiry_pass_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
