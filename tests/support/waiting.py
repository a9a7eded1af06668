"""Waiting on a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], Awaitable[object]], *, timeout: float = 30.0, what: str = "condition"):
    """Await `check()` until it returns a truthy value (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {result!r}")
        await asyncio.sleep(delay)  # poll interval of a deadline-bounded wait, not a wait for an event
        delay = min(delay * 2, 0.25)


def eventually_sync(check: Callable[[], object], *, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {result!r}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
