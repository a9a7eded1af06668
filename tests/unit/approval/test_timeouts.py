"""effective_timeout: the requested, default and maximum timeouts of a gate."""

from datetime import timedelta

import pytest

from signoff.approval.domain import DEFAULT_TIMEOUT, InvalidTimeout, effective_timeout
from signoff.kernel import InvalidDefinition

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
