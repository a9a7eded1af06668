"""Why a decision was refused: one machine-readable vocabulary for the aggregate, the signature check and the service.

The values are wire strings (published in ``DecisionRefused.reason``); renaming one is a contract change.
"""

import enum


class RefusalReason(enum.StrEnum):
    """Reasons a decision does not count. The sender learns which one from the ``DecisionRefused`` event."""

    # Decided by the Gate aggregate.
    GATE_CLOSED = "gate_closed"
    """The gate is final (approved, rejected, expired, cancelled), or its deadline passed before the decision."""
    STALE_TOKEN = "stale_token"  # noqa: S105 - a reason name, not a secret
    """The decision carries no token, an old one, or a wrong one."""
    NOT_ELIGIBLE = "not_eligible"
    """The approver is neither a listed user nor a member of a listed group of any rule."""
    SELF_APPROVAL = "self_approval"
    """The approver ran the pipeline and the policy disallows the pipeline executor."""
    INVALID_INPUTS = "invalid_inputs"
    """Unknown input name, value outside the allowed values, or a required input left without a value."""
    DUPLICATE = "duplicate"
    """The decision id was already seen, counted or refused. Decided by the service (the decisions it has seen)
    before the aggregate, and by the aggregate for its own votes."""

    # Decided outside the aggregate, before the gate is loaded.
    UNSIGNED = "unsigned"
    """The decision carries no signature."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not match the decision's canonical form under its source's key(s)."""
    UNKNOWN_SOURCE = "unknown_source"
    """No key is configured for the decision's source."""
    UNKNOWN_GATE = "unknown_gate"
    """No gate has the key (or token) the decision names."""
    STALE_DECISION = "stale_decision"
    """`decided_at` is further from the decision's arrival than the service allows (a late replay)."""
