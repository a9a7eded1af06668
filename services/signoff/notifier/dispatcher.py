"""The dispatcher: claims due deliveries and sends them, each channel in its own lane.

- A lane per channel, with its own concurrency limit and send timeout: a hanging or failing sink fills only its
  own lane's slots, so the other channels' deliveries keep going out.
- Claims use `FOR UPDATE SKIP LOCKED` per channel (replicas side by side never send the same row at once); a claim
  counts the try and leases the row. A replica that dies mid-send leaves the row `sending`; once the lease ends
  any replica claims it again and resends it under the same idempotency key, so the sink can drop the repeat.
- A failed try is retried with bounded exponential backoff (`domain.retry`), then dead-lettered (`dead`); a
  permanent failure (e.g. HTTP 404) is dead-lettered at once.
- Time comes from the injected clock; NOTIFY from the handler wakes it, a polling interval is the fallback.
- A lane claims ahead (up to `PREFETCH` x its concurrency, all leased; fewer for a channel with a long timeout, see
  `prefetch_depth`) and starts the next claimed row as soon as a send finishes, and successful sends are recorded
  in batches: a fast sink is fed without a database round trip per delivery. A crash before a batch is recorded
  leaves those rows `sending`; their lease brings them back and the idempotency key lets the sink drop the repeat,
  as for any crash mid-send.
- On shutdown, sends in flight may finish (at most `STOP_SEND_GRACE_SECONDS`), then the rest are cancelled, the
  successes not yet recorded written, and every other row this replica claimed and did not settle released (due
  at once, the try not counted): waiting for a slot, cancelled mid-send, or cancelled while its failed try was
  being recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import structlog
from prometheus_client import Gauge

from signoff.notifier.channels import DeliveryFailed, Outgoing, Transport
from signoff.notifier.domain import next_attempt
from signoff.notifier.metrics import (
    DELIVERIES_DEAD_LETTERED,
    DELIVERIES_IN_FLIGHT,
    DELIVERIES_RETRIED,
    DELIVERIES_SENT,
)
from signoff.notifier.repository import WAKE_CHANNEL, NotifierRepository
from signoff.runtime import tracing
from signoff.runtime.clock import Clock

log = structlog.get_logger(__name__)

PREFETCH = 8  # rows a lane keeps claimed per unit of concurrency
# How long the recorder lets successes gather before it writes them: a fast sink then costs one UPDATE per few dozen
# deliveries instead of one per handful (a crash before it writes resends them under the same idempotency key).
RECORD_LINGER_SECONDS = 0.02


def prefetch_depth(lease: timedelta, timeout: float) -> int:
    """Rows a lane claims ahead per unit of concurrency: `PREFETCH`, fewer when the channel's send timeout is long.

    A claimed row is leased from the claim, not from its send. With `d` rows per slot, the last one claimed starts
    after at most `d - 1` sends per slot and ends `d` timeouts after the claim even if every send hangs to the
    timeout; `d <= lease / timeout - 1` keeps that a timeout short of the lease's end, so no other replica claims a
    row this one is still going to send.
    """
    return max(1, min(PREFETCH, int(lease.total_seconds() // max(timeout, 0.001)) - 1))


STOP_SEND_GRACE_SECONDS = 10.0
"""How long a stopping dispatcher waits for its sends in flight (within the role's 15 s for background work, and
Kubernetes' 60 s grace): the default channel timeout."""


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
    prefetch: int = PREFETCH  # rows claimed ahead per unit of concurrency (`prefetch_depth`)
    in_flight: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    claimed: deque[tuple[Outgoing, int]] = field(default_factory=deque)  # claimed, waiting for a free slot
    gauge: Gauge = field(init=False, repr=False)  # this lane's in-flight gauge, looked up once

    def __post_init__(self) -> None:
        self.gauge = DELIVERIES_IN_FLIGHT.labels(self.channel)

    @property
    def free(self) -> int:
        """Sends that could start now."""
        return self.concurrency - len(self.in_flight)

    @property
    def room(self) -> int:
        """Rows to claim now: enough to keep every slot busy for a few sends."""
        return self.prefetch * self.concurrency - len(self.in_flight) - len(self.claimed)

    @property
    def wants_claim(self) -> bool:
        """Whether to claim now: once half the lane's prefetch is used up, so claims come in large batches (a
        round trip per many rows) and the next one is back before the claimed rows run out."""
        return self.room >= max(1, self.prefetch * self.concurrency // 2)


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
        drop_unrouted: bool = True,
    ) -> None:
        """`drop_unrouted`: at start, end the deliveries of channels that `lanes` does not have (removed from the
        routing file); False keeps them for replicas whose routing has them."""
        self.pool = pool
        self.drop_unrouted = drop_unrouted
        self.lanes = dict(lanes)
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.repository = repository or NotifierRepository()
        self.poll_interval = poll_interval
        self.rand = rand or random.Random().random
        self._wake = asyncio.Event()
        self._sent: list[tuple[Lane, Outgoing]] = []  # sent, not yet recorded
        self._sent_waiting = asyncio.Event()
        # Rows this replica claimed whose outcome is not recorded yet (delivery id -> attempt): on shutdown they go
        # back, whether they waited for a slot, were being sent, or were being recorded when the send was cancelled.
        self._unsettled: dict[int, int] = {}

    def wake(self, *_: object) -> None:
        """Look for due deliveries now (NOTIFY callback; a finished send also calls it to refill its lane)."""
        self._wake.set()

    async def dispatch_once(self) -> int:
        """Claim what each lane has room for and start what its free slots allow; returns how many were claimed."""
        claimed = 0
        now = self.clock.now()
        for lane in self.lanes.values():
            if lane.wants_claim:
                async with self.pool.acquire() as conn:
                    rows = await self.repository.claim(conn, lane.channel, now, self.policy.lease, lane.room)
                lane.claimed.extend((_outgoing(row), row["max_attempts"]) for row in rows)
                self._unsettled.update((row["id"], row["attempts"]) for row in rows)
                claimed += len(rows)
            self._start_sends(lane)
        return claimed

    def _start_sends(self, lane: Lane) -> None:
        while lane.free > 0 and lane.claimed:
            outgoing, max_attempts = lane.claimed.popleft()
            task = asyncio.create_task(self._deliver(lane, outgoing, max_attempts))
            lane.in_flight[outgoing.delivery_id] = task
            lane.gauge.inc()
            task.add_done_callback(lambda _t, lane=lane, i=outgoing.delivery_id: self._done(lane, i))

    def _done(self, lane: Lane, delivery_id: int) -> None:
        lane.in_flight.pop(delivery_id, None)
        lane.gauge.dec()
        self._start_sends(lane)
        if lane.wants_claim:
            self.wake()

    async def _deliver(self, lane: Lane, outgoing: Outgoing, max_attempts: int) -> None:
        error: str | None = None
        permanent = False
        wait: timedelta | None = None
        try:
            # The send continues the trace of the gate event it tells about (its request carries the span).
            with tracing.span(
                f"notifier send {lane.channel}",
                parent=outgoing.traceparent,
                kind="client",
                attributes={"signoff.channel": lane.channel, "signoff.delivery_id": outgoing.delivery_id},
            ):
                async with asyncio.timeout(lane.timeout):
                    await lane.transport.send(outgoing)
        except TimeoutError:
            error = f"no answer within {lane.timeout}s"
        except DeliveryFailed as exc:
            error, permanent, wait = str(exc), exc.permanent, exc.retry_after
        except Exception as exc:  # a transport bug or an unexpected client error: retried
            # Only its type on the row (shown by `signoff deliveries`, logged with the retry): an HTTP client's
            # message may quote the channel's URL, its credential. The traceback is in the debug log.
            log.debug("delivery_send_crashed", delivery_id=outgoing.delivery_id, channel=lane.channel, exc_info=True)
            error = f"{type(exc).__name__} (an unexpected error; the notifier's debug log has its traceback)"
        if error is None:
            self._sent.append((lane, outgoing))
            self._sent_waiting.set()
            return
        bound = log.bind(delivery_id=outgoing.delivery_id, channel=lane.channel, attempt=outgoing.attempt)
        now = self.clock.now()
        try:
            async with self.pool.acquire() as conn:
                retry_at = None
                if not permanent:
                    retry_at = next_attempt(
                        outgoing.attempt,
                        now,
                        base=self.policy.base,
                        cap=self.policy.cap,
                        max_attempts=max_attempts,
                        rand=self.rand,
                        retry_after=wait,
                    )
                recorded = await self.repository.mark_failed(
                    conn, outgoing.delivery_id, outgoing.attempt, now, error, retry_at
                )
                self._unsettled.pop(outgoing.delivery_id, None)
                if recorded:
                    if retry_at is None:
                        DELIVERIES_DEAD_LETTERED.labels(lane.channel).inc()
                        bound.warning("delivery_dead_lettered", error=error, permanent=permanent)
                    else:
                        DELIVERIES_RETRIED.labels(lane.channel).inc()
                        bound.info("delivery_retry_scheduled", error=error, retry_at=retry_at.isoformat())
        except Exception as exc:
            # The database is unreachable: the row stays `sending` and its lease brings it back.
            bound.warning("delivery_outcome_not_recorded", error=repr(exc), sent=error is None)

    async def record_sent(self) -> int:
        """Write the successful sends not yet recorded, in one statement; returns how many."""
        batch, self._sent = self._sent, []
        self._sent_waiting.clear()
        if not batch:
            return 0
        now = self.clock.now()
        try:
            async with self.pool.acquire() as conn:
                recorded = await self.repository.mark_many_sent(
                    conn, [(outgoing.delivery_id, outgoing.attempt) for _, outgoing in batch], now
                )
        except Exception as exc:
            # The database is unreachable: the rows stay `sending` and their lease brings them back (same key).
            log.warning("deliveries_outcome_not_recorded", error=repr(exc), sent=len(batch))
            return 0
        # Counted and logged per batch: a fast sink gets thousands a second, a line or a label lookup each would
        # cost more than the send (failures keep a line each).
        per_channel: dict[str, int] = {}
        for lane, outgoing in batch:
            self._unsettled.pop(outgoing.delivery_id, None)
            if outgoing.delivery_id in recorded:
                per_channel[lane.channel] = per_channel.get(lane.channel, 0) + 1
        for channel, count in per_channel.items():
            DELIVERIES_SENT.labels(channel).inc(count)
        log.debug("deliveries_sent", count=len(recorded), delivery_ids=sorted(recorded)[:20])
        return len(recorded)

    async def _record_until(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            waiter = asyncio.ensure_future(self._sent_waiting.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not stop.done():
                await asyncio.wait({stop}, timeout=RECORD_LINGER_SECONDS)
            stop.cancel()
            await self.record_sent()

    async def run(self, stopping: asyncio.Event) -> None:
        """Dispatch until `stopping` is set; then let the sends in flight finish (at most STOP_SEND_GRACE_SECONDS),
        cancel and release the rest."""
        listener = await self.pool.acquire()
        delay = 0.1
        recorder = asyncio.create_task(self._record_until(stopping))
        try:
            # Deliveries of a channel removed from the routing file would wait forever: end them, once.
            dropped = (
                await self.repository.drop_unrouted(listener, sorted(self.lanes), self.clock.now())
                if self.drop_unrouted
                else 0
            )
            if dropped:
                log.warning("deliveries_dropped", reason="channel removed", count=dropped)
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
                try:
                    if tasks and stopping.is_set():
                        # Sends under way may finish first (each is bounded by its channel's timeout): cancelled,
                        # a message already out would be sent again after the restart, and chat webhooks do not
                        # dedupe. What is still under way after the grace is cancelled and given back.
                        grace = min(STOP_SEND_GRACE_SECONDS, max(lane.timeout for lane in self.lanes.values()))
                        await asyncio.wait(tasks, timeout=grace)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                recorder.cancel()
                await asyncio.gather(recorder, return_exceptions=True)
                await self.record_sent()
                await self._release_unsettled()
                with contextlib.suppress(Exception):
                    await listener.remove_listener(WAKE_CHANNEL, self.wake)
            finally:
                await self.pool.release(listener)

    async def _release_unsettled(self) -> None:
        """Give back every row claimed and not settled (due at once, the try not counted): claimed ahead and never
        started, or cancelled mid-send or mid-record. Without this a row cancelled while its failed try was being
        recorded stayed `sending` until its lease ran out. A row whose outcome did commit is left alone (the
        release matches `sending` rows of the same attempt only)."""
        for lane in self.lanes.values():
            lane.claimed.clear()
        now = self.clock.now()
        for delivery_id, attempt in list(self._unsettled.items()):
            with contextlib.suppress(Exception):
                async with self.pool.acquire() as conn:
                    await self.repository.release(conn, delivery_id, attempt, now)
                self._unsettled.pop(delivery_id, None)


def _outgoing(row: asyncpg.Record) -> Outgoing:
    return Outgoing(
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
        gate_id=row["gate_id"],
        kind=row["kind"],
        traceparent=row["traceparent"],
    )
