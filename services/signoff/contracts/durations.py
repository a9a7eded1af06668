"""Durations as pipelines write them: Harness syntax (`1d`, `2h30m`, `45m`, `10s`, `1w`) or ISO 8601 (`PT1H30M`,
`P1D`).

Calendar units (years, months) are refused: their length depends on the date they start from, and a gate timeout
must mean the same span whenever the gate opens.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

# Harness: one or more `<integer><unit>` parts, largest unit first, optionally separated by spaces ("1d 2h").
_HARNESS = re.compile(
    r"\s*(?:(?P<w>\d+)w)?\s*(?:(?P<d>\d+)d)?\s*(?:(?P<h>\d+)h)?\s*(?:(?P<m>\d+)m)?\s*(?:(?P<s>\d+)s)?"
    r"\s*(?:(?P<ms>\d+)ms)?\s*"
)
# ISO 8601 durations without calendar units; the seconds may carry a fraction (`PT0.5S`).
_ISO = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?"
)

DURATION_PATTERN = (
    r"^(?=\s*\d)\s*(?:\d+w)?\s*(?:\d+d)?\s*(?:\d+h)?\s*(?:\d+m)?\s*(?:\d+s)?\s*(?:\d+ms)?\s*$"
    r"|^P(?=\d|T\d)(?:\d+W)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:[.,]\d+)?S)?)?$"
)
"""The accepted shapes as a JSON Schema pattern; `parse_duration` is the precise check (it also refuses empty
durations such as `P` or `PT`)."""


class DurationError(ValueError):
    """A duration that is neither Harness syntax nor an ISO 8601 duration; the message quotes it and says why."""


def parse_duration(text: str) -> timedelta:
    """The span `text` denotes, e.g. `parse_duration("2h30m") == timedelta(hours=2, minutes=30)`.

    Raises DurationError for anything else, including calendar units (`P1M`, `P1Y`) and empty input.
    """
    if not isinstance(text, str):
        raise DurationError(f"duration must be a string like '1d' or 'PT1H', not {type(text).__name__}")
    return _parse_text(text)


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> timedelta:
    # Cached: the same few texts ('1d', '30m') are parsed for every request of a burst. Errors are not cached.
    stripped = text.strip()
    if stripped.startswith("P"):
        match = _ISO.fullmatch(stripped)
        if match is None or stripped in ("P", "PT") or stripped.endswith("T"):
            hint = " (years and months are not supported)" if re.search(r"\d+[YM]", stripped.split("T")[0]) else ""
            raise DurationError(f"invalid ISO 8601 duration {text!r}{hint}; expected e.g. 'PT1H30M' or 'P1D'")
        parts = match.groupdict()
        seconds = float(parts["s"].replace(",", ".")) if parts["s"] else 0.0
        return _span(
            text,
            weeks=int(parts["w"] or 0),
            days=int(parts["d"] or 0),
            hours=int(parts["h"] or 0),
            minutes=int(parts["m"] or 0),
            seconds=seconds,
        )
    match = _HARNESS.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        raise DurationError(
            f"invalid duration {text!r}; expected Harness syntax like '1d', '2h30m', '45m', '10s', '1w' "
            "(units w d h m s ms, largest first) or ISO 8601 like 'PT1H30M'"
        )
    parts = {unit: int(value or 0) for unit, value in match.groupdict().items()}
    return _span(
        text,
        weeks=parts["w"],
        days=parts["d"],
        hours=parts["h"],
        minutes=parts["m"],
        seconds=parts["s"],
        milliseconds=parts["ms"],
    )


def _span(text: str, **parts: float) -> timedelta:
    try:
        return timedelta(**parts)
    except OverflowError:
        raise DurationError(f"duration {text!r} is too long") from None


def parse_positive_duration(text: str) -> timedelta:
    """Like parse_duration, and refuses a zero span (a timeout or wait of nothing is a mistake)."""
    value = parse_duration(text)
    if value <= timedelta(0):
        raise DurationError(f"duration {text!r} must be longer than zero")
    return value


def format_duration(value: timedelta) -> str:
    """`timedelta(hours=2, minutes=30)` -> `2h30m` (Harness syntax, largest units first)."""
    remaining = int(value.total_seconds() * 1000)
    if remaining <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _positive_duration(text: str) -> str:
    parse_positive_duration(text)
    # Keep the text as written: notifications show the pipeline author's spelling, and it stays lossless.
    return text.strip()


DurationText = Annotated[
    str,
    AfterValidator(_positive_duration),
    Field(
        json_schema_extra={"pattern": DURATION_PATTERN},
        examples=["1d", "2h30m", "PT1H"],
    ),
]
"""A positive duration kept as text, in Harness syntax or ISO 8601; `parse_duration` turns it into a timedelta."""
