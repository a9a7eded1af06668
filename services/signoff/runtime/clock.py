"""Where the roles get the time from. Domain rules never read the wall clock; callers pass ``at``.

Handlers, loops and dispatchers take a ``Clock``; production wires ``SystemClock``, tests a ``FixedClock`` they move
by hand, so timeouts, expiries and reminders are tested without sleeping.
"""

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current time (aware, UTC)."""
        ...


class SystemClock:
    """The real time: what production wires in."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until told to move. For tests and replays."""

    def __init__(self, at: datetime) -> None:
        require_aware(at, "FixedClock time")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        """The time the clock was set to."""
        return self._at

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (aware). Going backwards is allowed: replays need it."""
        require_aware(at, "FixedClock time")
        self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        self._at = self._at + delta
        return self._at

    def __repr__(self) -> str:
        return f"FixedClock({self._at.isoformat()})"


def require_aware(at: datetime, what: str) -> None:
    """Refuse naive datetimes: a clock set to a naive local time would be off by the UTC offset."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {at!r}")
