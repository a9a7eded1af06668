"""Cooperative scheduling inside a role's process: CPU-bound loops over a batch yield, and make way for the
role's priority work (a consumer lane and its outbox relay: a person's decision).

A role runs its loops on one event loop: the requests loop, the decisions lane, the outbox relays, the health
server. Decoding and validating 1,000 requests, building their rows and handing 1,000 records to the producer
never suspend, so without a yield a decision that has arrived waits until the whole batch is through. A bare
yield is not enough either: the event loop is first come, first served, and a decision makes a dozen small
database round trips, each of which needs the loop again, so it would get one step per yield of the batch. While
priority work is in flight, the other loops therefore wait at their yield points until it is done, for at most
MAX_WAIT_SECONDS each time, so a steady stream of decisions slows a burst down but never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator

YIELD_EVERY = 50
"""Items between two yields: at about 0.1-0.2 ms of CPU an item (a 2.8 KB request validated), a decision waits at
most a few milliseconds for a batch in another loop, and the yields themselves (microseconds each) cost nothing
measurable."""

MAX_WAIT_SECONDS = 0.25
"""How long a yield point waits for priority work to finish before it goes on anyway."""

_prioritized: contextvars.ContextVar[bool] = contextvars.ContextVar("signoff_prioritized", default=False)


class _Priority:
    """How many units of priority work are in flight in this process, and who waits for there to be none.
    (Futures of the running loop rather than an asyncio.Event, which binds to the first loop that waits on it.)"""

    def __init__(self) -> None:
        self._in_flight = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        self._in_flight += 1
        token = _prioritized.set(True)  # its own yield points (and tasks it starts) never wait for it
        try:
            yield
        finally:
            _prioritized.reset(token)
            self._in_flight -= 1
            if self._in_flight == 0:
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    async def idle(self) -> None:
        if not self._in_flight:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)


_PRIORITY = _Priority()


def priority_work() -> contextlib.AbstractContextManager[None]:
    """Around a unit of priority work (a lane's batch, from its fetch to its commit; a lane relay's round): while
    any is in flight, the yield points of the other loops wait for it, and its own do not."""
    return _PRIORITY.working()


async def make_way() -> None:
    """In a loop that is not priority work: wait until no priority work is in flight (at most MAX_WAIT_SECONDS),
    else just give the event loop back once."""
    if _PRIORITY.busy and not _prioritized.get():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_PRIORITY.idle(), MAX_WAIT_SECONDS)
        return
    await asyncio.sleep(0)


async def cooperate(index: int) -> None:
    """At every YIELD_EVERY-th item of a batch (counting from 0, the first excluded): `make_way()`."""
    if index and index % YIELD_EVERY == 0:
        await make_way()
