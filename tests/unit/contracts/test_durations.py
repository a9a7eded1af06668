from datetime import timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from signoff.contracts.durations import DurationError, DurationText, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", timedelta(days=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("45m", timedelta(minutes=45)),
        ("10s", timedelta(seconds=10)),
        ("1w", timedelta(weeks=1)),
        ("1d 2h", timedelta(days=1, hours=2)),
        ("1m30s", timedelta(minutes=1, seconds=30)),
        ("500ms", timedelta(milliseconds=500)),
        (" 2h ", timedelta(hours=2)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT45S", timedelta(seconds=45)),
        ("0s", timedelta(0)),
    ],
)
def test_parses_harness_and_iso_8601(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "1x", "h", "30m1h", "1.5h", "1D", "-1d", "P", "PT", "P1DT", "PT1D", "1 d"])
def test_refuses_anything_else_with_a_clear_error(text: str) -> None:
    with pytest.raises(DurationError, match="expected"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P1M", "P1Y", "P1Y2M"])
def test_refuses_calendar_units_and_says_so(text: str) -> None:
    with pytest.raises(DurationError, match="years and months are not supported"):
        parse_duration(text)


def test_refuses_non_strings_and_overflow() -> None:
    with pytest.raises(DurationError, match="must be a string"):
        parse_duration(3600)  # type: ignore[arg-type]
    with pytest.raises(DurationError, match="too long"):
        parse_duration("99999999999w")


def test_duration_text_keeps_the_spelling_and_refuses_zero() -> None:
    adapter = TypeAdapter(DurationText)
    assert adapter.validate_python(" 2h30m ") == "2h30m"
    with pytest.raises(ValidationError, match="longer than zero"):
        adapter.validate_python("0s")
    with pytest.raises(ValidationError, match="invalid duration"):
        adapter.validate_python("soon")
