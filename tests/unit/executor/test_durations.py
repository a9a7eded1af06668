"""Durations as the executor uses them: positive spans, and Harness-style formatting for messages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signoff.contracts.durations import DurationError, format_duration, parse_positive_duration


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1d", timedelta(days=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("45m", timedelta(minutes=45)),
        ("1w 2d", timedelta(days=9)),
        ("500ms", timedelta(milliseconds=500)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P2W", timedelta(weeks=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
    ],
)
def test_accepted_forms(text: str, value: timedelta) -> None:
    assert parse_positive_duration(text) == value


@pytest.mark.parametrize("text", ["", "1x", "10 minutes", "1.5h", "P", "PT", "PT1H2D", "P1Y", "0s", "PT0S"])
def test_refused_forms(text: str) -> None:
    with pytest.raises(DurationError):
        parse_positive_duration(text)


def test_format() -> None:
    assert format_duration(timedelta(days=1, hours=2, seconds=5)) == "1d2h5s"
    assert format_duration(timedelta(seconds=90)) == "1m30s"
