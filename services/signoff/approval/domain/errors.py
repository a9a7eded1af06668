"""Errors for malformed definitions.

A business refusal (a stale token, a non-member voting) is never an exception: the aggregate returns a
``DecisionRefused`` event for it. These exceptions are for input that should never have reached the domain — a rule
with nobody in it, a naive datetime, a non-positive timeout — which the service layer treats as an invalid message.
"""

from signoff.kernel import InvalidDefinition

__all__ = ["InvalidTimeout"]


class InvalidTimeout(InvalidDefinition):
    """A timeout that is zero, negative, or configured inconsistently."""
