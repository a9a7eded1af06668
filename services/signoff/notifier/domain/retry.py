"""When to try a failed delivery again: bounded exponential backoff with injected jitter (pure).

Attempt `n` (1 = the first try) failed at `now`; the next try waits `min(cap, base * 2**(n-1))`, scaled by a jitter
factor in [0.5, 1.0) drawn from `rand()` ("equal jitter": spreads retries of many deliveries apart, yet never
retries sooner than half the nominal delay). After `max_attempts` tries the delivery is dead-lettered (`None`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

DEFAULT_BASE = timedelta(seconds=2)
DEFAULT_CAP = timedelta(minutes=10)
DEFAULT_MAX_ATTEMPTS = 8
MAX_RETRY_AFTER = timedelta(hours=1)
"""The longest `Retry-After` honoured: a channel asking for more is tried again after this (never parked)."""


def backoff_delay(attempt: int, *, base: timedelta, cap: timedelta, rand: Callable[[], float]) -> timedelta:
    """The wait after failed attempt `attempt` (>= 1): `min(cap, base * 2**(attempt-1)) * (0.5 + rand()/2)`.

    `rand` returns a float in [0, 1) (e.g. `random.Random(seed).random`); values outside are clamped."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    if base <= timedelta(0) or cap < base:
        raise ValueError(f"need 0 < base <= cap, got base {base} and cap {cap}")
    # Cap the exponent before computing: 2**attempt for a large attempt would overflow timedelta.
    nominal = cap if attempt > 62 else min(cap, base * (2 ** (attempt - 1)))
    factor = 0.5 + min(max(rand(), 0.0), 1.0) / 2
    return nominal * factor


def next_attempt(
    attempt: int,
    now: datetime,
    *,
    base: timedelta = DEFAULT_BASE,
    cap: timedelta = DEFAULT_CAP,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    rand: Callable[[], float],
    retry_after: timedelta | None = None,
) -> datetime | None:
    """When to try again after attempt `attempt` failed at `now`, or None: dead-letter (the last try failed).
    `retry_after`: what the channel asked (HTTP `Retry-After` on 429 / 503): never sooner than that (up to
    `MAX_RETRY_AFTER`), even when the backoff would be shorter."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    if attempt >= max_attempts:
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, not {attempt}")
        return None
    delay = backoff_delay(attempt, base=base, cap=cap, rand=rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return now + delay


def schedule(
    now: datetime,
    *,
    base: timedelta = DEFAULT_BASE,
    cap: timedelta = DEFAULT_CAP,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    rand: Callable[[], float],
) -> list[datetime]:
    """Every retry time if each try fails immediately, starting with a first failure at `now` (for tests and
    documentation): `max_attempts - 1` moments."""
    out: list[datetime] = []
    moment: datetime | None = now
    attempt = 1
    while moment is not None:
        moment = next_attempt(attempt, moment, base=base, cap=cap, max_attempts=max_attempts, rand=rand)
        if moment is not None:
            out.append(moment)
        attempt += 1
    return out
