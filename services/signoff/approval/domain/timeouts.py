"""How long a gate waits: the requested timeout, else the configured default, never beyond the configured maximum.

Parsing ``1d`` / ``2h30m`` / ISO 8601 is the contracts package's job; the domain works on ``timedelta``.
"""

from datetime import timedelta

from signoff.approval.domain.errors import InvalidTimeout

DEFAULT_TIMEOUT = timedelta(days=1)
"""Harness's default approval timeout, for settings that do not configure one."""


def effective_timeout(requested: timedelta | None, default: timedelta, maximum: timedelta) -> timedelta:
    """The timeout a gate gets.

    ``requested`` (from the approval step) wins when given, ``default`` otherwise; either is clamped to ``maximum``
    so that no request can park a gate (and its pipeline) longer than operators allow. A non-positive requested
    timeout is refused rather than clamped: it is a mistake in the pipeline, not a wish to expire at once.

    Raises ``InvalidTimeout`` for a non-positive ``requested``, ``default`` or ``maximum``.
    """
    for name, value in (("default", default), ("maximum", maximum)):
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise InvalidTimeout(f"the configured {name} timeout must be a positive duration, got {value!r}")
    if requested is None:
        chosen = default
    elif not isinstance(requested, timedelta) or requested <= timedelta(0):
        raise InvalidTimeout(f"a gate timeout must be a positive duration, got {requested!r}")
    else:
        chosen = requested
    return min(chosen, maximum)
