"""Where the approval service gets the time from. Domain rules never read the wall clock; callers pass ``at``.

Handlers take a ``Clock``; production wires ``SystemClock``, tests a ``FixedClock`` they move by hand, so timeouts
are tested without sleeping.
"""

from datetime import UTC, datetime, timedelta
from typing import Protocol

from signoff.approval.domain.model import require_aware


class Clock(Protocol):
    """A source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current time (aware, UTC)."""
        ...


class SystemClock:
    """The real time. The only place in the approval service that reads the wall clock."""

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
