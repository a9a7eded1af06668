"""The retry schedule: exponential, capped, jittered within bounds, dead-lettered after the last try."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from signoff.notifier.domain import backoff_delay, next_attempt, schedule

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
BASE = timedelta(seconds=2)
CAP = timedelta(minutes=1)


def test_without_jitter_spread_the_delay_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=BASE, cap=CAP, rand=lambda: 0.999999) for n in range(1, 9)]
    assert [round(d.total_seconds()) for d in delays] == [2, 4, 8, 16, 32, 60, 60, 60]


def test_jitter_keeps_every_delay_between_half_and_the_nominal_delay() -> None:
    rng = random.Random(7)
    for attempt in range(1, 40):
        nominal = min(CAP, BASE * 2 ** (attempt - 1))
        delay = backoff_delay(attempt, base=BASE, cap=CAP, rand=rng.random)
        assert nominal / 2 <= delay <= nominal


def test_dead_letter_after_max_attempts() -> None:
    assert next_attempt(3, NOW, base=BASE, cap=CAP, max_attempts=4, rand=lambda: 0.0) == NOW + timedelta(seconds=4)
    assert next_attempt(4, NOW, base=BASE, cap=CAP, max_attempts=4, rand=lambda: 0.0) is None
    assert next_attempt(1, NOW, max_attempts=1, rand=lambda: 0.0) is None


def test_schedule_is_bounded_and_deterministic_for_a_seed() -> None:
    first = schedule(NOW, base=BASE, cap=CAP, max_attempts=6, rand=random.Random(1).random)
    again = schedule(NOW, base=BASE, cap=CAP, max_attempts=6, rand=random.Random(1).random)
    assert first == again and len(first) == 5
    assert first == sorted(first)
    assert first[-1] - NOW <= timedelta(seconds=2 + 4 + 8 + 16 + 32)


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, base=BASE, cap=CAP, rand=lambda: 1.0) == CAP


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"base": timedelta(0)},
        {"cap": timedelta(seconds=1)},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    args = {"attempt": 1, "base": BASE, "cap": CAP, "rand": lambda: 0.5} | kwargs
    with pytest.raises(ValueError):
        backoff_delay(**args)
    with pytest.raises(ValueError):
        next_attempt(1, NOW, max_attempts=0, rand=lambda: 0.5)
