"""The runtime's clocks: the system clock production wires in, and the fixed one tests move by hand."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signoff.runtime.clock import Clock, FixedClock, SystemClock

T0 = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


class TestClocks:
    def test_fixed_clock_stands_still(self):
        clock = FixedClock(T0)
        assert clock.now() == clock.now() == T0

    def test_fixed_clock_advances(self):
        clock = FixedClock(T0)
        assert clock.advance(timedelta(minutes=5)) == T0 + timedelta(minutes=5)
        assert clock.now() == T0 + timedelta(minutes=5)

    def test_fixed_clock_set_and_normalises_to_utc(self):
        clock = FixedClock(T0)
        clock.set(datetime(2030, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))))
        assert clock.now() == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
        assert clock.now().tzinfo is UTC

    def test_fixed_clock_refuses_naive_times(self):
        with pytest.raises(ValueError):
            FixedClock(datetime(2025, 1, 1))
        with pytest.raises(ValueError):
            FixedClock(T0).set(datetime(2025, 1, 1))

    def test_system_clock_is_aware_utc(self):
        now = SystemClock().now()
        assert now.tzinfo is UTC

    def test_both_satisfy_the_protocol(self):
        def read(clock: Clock) -> datetime:
            return clock.now()

        assert read(FixedClock(T0)) == T0
        assert read(SystemClock()) >= T0
