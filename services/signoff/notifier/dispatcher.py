"""The dispatcher: claims due deliveries and sends them, each channel in its own lane.

- A lane per channel, with its own concurrency limit and send timeout: a hanging or failing sink fills only its
  own lane's slots, so the other channels' deliveries keep going out.
- Claims use `FOR UPDATE SKIP LOCKED` per channel (replicas side by side never send the same row at once); a claim
  counts the try and leases the row. A replica that dies mid-send leaves the row `sending`; once the lease ends
  any replica claims it again and resends it under the same idempotency key, so the sink can drop the repeat.
- A failed try is retried with bounded exponential backoff (`domain.retry`), then dead-lettered (`dead`); a
  permanent failure (e.g. HTTP 404) is dead-lettered at once.
- Time comes from the injected clock; NOTIFY from the handler wakes it, a polling interval is the fallback.
- On shutdown, sends in flight are cancelled and their rows released (due at once, the try not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import structlog

from signoff.notifier.channels import DeliveryFailed, Outgoing, Transport
from signoff.notifier.clock import Clock
from signoff.notifier.domain import next_attempt
from signoff.notifier.metrics import (
    DELIVERIES_DEAD_LETTERED,
    DELIVERIES_IN_FLIGHT,
    DELIVERIES_RETRIED,
    DELIVERIES_SENT,
)
from signoff.notifier.repository import WAKE_CHANNEL, NotifierRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff (see `signoff.notifier.domain.retry`)."""

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=10)
    lease: timedelta = timedelta(minutes=2)


@dataclass
class Lane:
    """One channel's transport and limits, and the sends it has in flight."""

    channel: str
    transport: Transport
    concurrency: int
    timeout: float
    in_flight: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.concurrency - len(self.in_flight)


class Dispatcher:
    """Sends due deliveries of the channels in `lanes` until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        lanes: Mapping[str, Lane],
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        repository: NotifierRepository | None = None,
        poll_interval: float = 1.0,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.pool = pool
        self.lanes = dict(lanes)
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.repository = repository or NotifierRepository()
        self.poll_interval = poll_interval
        self.rand = rand or random.Random().random
        self._wake = asyncio.Event()

    def wake(self, *_: object) -> None:
        """Look for due deliveries now (NOTIFY callback; a finished send also calls it to refill its lane)."""
        self._wake.set()

    async def dispatch_once(self) -> int:
        """Claim what each lane has room for and start sending it; returns how many were claimed."""
        claimed = 0
        now = self.clock.now()
        for lane in self.lanes.values():
            if lane.free <= 0:
                continue
            async with self.pool.acquire() as conn:
                rows = await self.repository.claim(conn, lane.channel, now, self.policy.lease, lane.free)
            for row in rows:
                outgoing = Outgoing(
                    delivery_id=row["id"],
                    idempotency_key=row["idempotency_key"],
                    channel=row["channel"],
                    recipient=row["recipient"],
                    attempt=row["attempts"],
                    content_type=row["content_type"],
                    subject=row["subject"],
                    body=row["body"],
                    html=row["html"],
                    headers=tuple((name, value) for name, value in row["headers"] or ()),
                )
                task = asyncio.create_task(self._deliver(lane, outgoing, row["max_attempts"]))
                lane.in_flight[outgoing.delivery_id] = task
                DELIVERIES_IN_FLIGHT.labels(lane.channel).inc()
                task.add_done_callback(lambda _t, lane=lane, i=outgoing.delivery_id: self._done(lane, i))
            claimed += len(rows)
        return claimed

    def _done(self, lane: Lane, delivery_id: int) -> None:
        lane.in_flight.pop(delivery_id, None)
        DELIVERIES_IN_FLIGHT.labels(lane.channel).dec()
        self.wake()

    async def _deliver(self, lane: Lane, outgoing: Outgoing, max_attempts: int) -> None:
        bound = structlog.get_logger(__name__).bind(
            delivery_id=outgoing.delivery_id, channel=lane.channel, attempt=outgoing.attempt
        )
        error: str | None = None
        permanent = False
        try:
            async with asyncio.timeout(lane.timeout):
                await lane.transport.send(outgoing)
        except asyncio.CancelledError:
            # Shutdown: give the row back rather than wait for its lease (the sink may have it: same key next time).
            with contextlib.suppress(Exception):
                async with self.pool.acquire() as conn:
                    await self.repository.release(conn, outgoing.delivery_id, outgoing.attempt, self.clock.now())
            raise
        except TimeoutError:
            error = f"no answer within {lane.timeout}s"
        except DeliveryFailed as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # a transport bug or an unexpected client error: recorded on the row, retried
            error = f"{type(exc).__name__}: {exc}"
        now = self.clock.now()
        try:
            async with self.pool.acquire() as conn:
                if error is None:
                    if await self.repository.mark_sent(conn, outgoing.delivery_id, outgoing.attempt, now):
                        DELIVERIES_SENT.labels(lane.channel).inc()
                        bound.info("delivery_sent")
                    return
                retry_at = None
                if not permanent:
                    retry_at = next_attempt(
                        outgoing.attempt,
                        now,
                        base=self.policy.base,
                        cap=self.policy.cap,
                        max_attempts=max_attempts,
                        rand=self.rand,
                    )
                if await self.repository.mark_failed(
                    conn, outgoing.delivery_id, outgoing.attempt, now, error, retry_at
                ):
                    if retry_at is None:
                        DELIVERIES_DEAD_LETTERED.labels(lane.channel).inc()
                        bound.warning("delivery_dead_lettered", error=error, permanent=permanent)
                    else:
                        DELIVERIES_RETRIED.labels(lane.channel).inc()
                        bound.info("delivery_retry_scheduled", error=error, retry_at=retry_at.isoformat())
        except Exception as exc:
            # The database is unreachable: the row stays `sending` and its lease brings it back.
            bound.warning("delivery_outcome_not_recorded", error=repr(exc), sent=error is None)

    async def run(self, stopping: asyncio.Event) -> None:
        """Dispatch until `stopping` is set; then cancel and release the sends in flight."""
        listener = await self.pool.acquire()
        delay = 0.1
        try:
            await listener.add_listener(WAKE_CHANNEL, self.wake)
            while not stopping.is_set():
                self._wake.clear()
                try:
                    await self.dispatch_once()
                    delay = 0.1
                except Exception as exc:
                    log.warning("dispatch_failed", error=repr(exc), retry_in=delay)
                    await asyncio.sleep(delay)  # backoff while the database is unreachable
                    delay = min(delay * 2, 10.0)
                    continue
                waiter = asyncio.ensure_future(self._wake.wait())
                stop = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({waiter, stop}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stop.cancel()
        finally:
            # Nested, so the listener goes back to the pool even when the service's stop() cancels this task
            # while it is still cleaning up (a leaked connection would make pool.close() wait forever).
            try:
                tasks = [task for lane in self.lanes.values() for task in lane.in_flight.values()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await listener.remove_listener(WAKE_CHANNEL, self.wake)
            finally:
                await self.pool.release(listener)
