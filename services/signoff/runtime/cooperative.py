"""Cooperative yielding for CPU-bound loops over a batch.

A role runs its loops on one event loop: the requests loop, the decisions lane, the outbox relays, the health
server. Decoding and validating 1,000 requests, building their rows and handing 1,000 records to the producer
never suspend, so without a yield a decision that has arrived waits until the whole batch is through."""

from __future__ import annotations

import asyncio

YIELD_EVERY = 50
"""Items between two yields: at about 0.1-0.2 ms of CPU an item (a 2.8 KB request validated), a decision waits at
most a few milliseconds for a batch in another loop, and the yields themselves (microseconds each) cost nothing
measurable."""


async def cooperate(index: int) -> None:
    """Give the event loop back when `index` (counting items of a batch from 0) is a multiple of YIELD_EVERY past
    the first."""
    if index and index % YIELD_EVERY == 0:
        await asyncio.sleep(0)
