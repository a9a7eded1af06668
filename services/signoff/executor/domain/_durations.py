"""A small private duration parser for pipeline validation and step timeouts.

Harness syntax (`1d`, `2h30m`, `45m`, `1w 2d`, `500ms`) and ISO 8601 (`PT1H30M`, `P1D`, `P2W`). Kept private to
the executor's domain until it is unified with `signoff.contracts.durations`.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_HARNESS = re.compile(r"^(?:\s*\d+\s*(?:ms|w|d|h|m|s)\s*)+$")
_HARNESS_PART = re.compile(r"(\d+)\s*(ms|w|d|h|m|s)")
_ISO = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration; raises ValueError with a message that shows the accepted forms."""
    raw = str(text).strip()
    value: timedelta | None = None
    if _HARNESS.match(raw):
        value = sum((int(n) * _UNITS[unit] for n, unit in _HARNESS_PART.findall(raw)), timedelta())
    else:
        match = _ISO.match(raw.upper())
        if match and raw.upper() not in ("P", "PT"):
            parts = {key: float(val) for key, val in match.groupdict().items() if val is not None}
            value = timedelta(**parts)
    if value is None:
        raise ValueError(f"bad duration {text!r}: expected e.g. 1d, 2h30m, 45m, 10s or ISO 8601 such as PT1H")
    if value <= timedelta():
        raise ValueError(f"bad duration {text!r}: must be longer than zero")
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
