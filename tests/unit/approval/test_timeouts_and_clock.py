"""effective_timeout and the clocks."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signoff.approval.domain import (
    DEFAULT_TIMEOUT,
    Clock,
    FixedClock,
    InvalidDefinition,
    InvalidTimeout,
    SystemClock,
    effective_timeout,
)
from tests.unit.approval.builders import T0

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


class TestEffectiveTimeout:
    def test_harness_default_is_one_day(self):
        assert DEFAULT_TIMEOUT == DAY

    def test_requested_wins(self):
        assert effective_timeout(timedelta(hours=2), DAY, WEEK) == timedelta(hours=2)

    def test_default_when_not_requested(self):
        assert effective_timeout(None, DAY, WEEK) == DAY

    def test_requested_clamped_to_maximum(self):
        assert effective_timeout(timedelta(days=30), DAY, WEEK) == WEEK

    def test_default_clamped_to_maximum(self):
        assert effective_timeout(None, WEEK, DAY) == DAY

    def test_exactly_the_maximum(self):
        assert effective_timeout(WEEK, DAY, WEEK) == WEEK

    @pytest.mark.parametrize("requested", [timedelta(0), timedelta(seconds=-1), -DAY])
    def test_non_positive_requested_refused(self, requested):
        with pytest.raises(InvalidTimeout, match="positive"):
            effective_timeout(requested, DAY, WEEK)

    @pytest.mark.parametrize(
        "default, maximum", [(timedelta(0), WEEK), (DAY, timedelta(0)), (-DAY, WEEK), (DAY, -WEEK)]
    )
    def test_non_positive_configuration_refused(self, default, maximum):
        with pytest.raises(InvalidTimeout):
            effective_timeout(None, default, maximum)

    def test_not_a_duration(self):
        with pytest.raises(InvalidTimeout):
            effective_timeout("1d", DAY, WEEK)

    def test_invalid_timeout_is_a_value_error(self):
        assert issubclass(InvalidTimeout, InvalidDefinition)
        assert issubclass(InvalidTimeout, ValueError)

    @pytest.mark.parametrize("minutes", [1, 59, 60, 61, 1439, 1440, 10079, 10080, 10081, 10**6])
    def test_result_is_positive_and_never_above_maximum(self, minutes):
        result = effective_timeout(timedelta(minutes=minutes), DAY, WEEK)
        assert timedelta(0) < result <= WEEK
        assert result == min(timedelta(minutes=minutes), WEEK)


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
        with pytest.raises(InvalidDefinition):
            FixedClock(datetime(2025, 1, 1))
        with pytest.raises(InvalidDefinition):
            FixedClock(T0).set(datetime(2025, 1, 1))

    def test_system_clock_is_aware_utc(self):
        now = SystemClock().now()
        assert now.tzinfo is UTC

    def test_both_satisfy_the_protocol(self):
        def read(clock: Clock) -> datetime:
            return clock.now()

        assert read(FixedClock(T0)) == T0
        assert read(SystemClock()) >= T0
