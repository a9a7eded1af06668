"""The approval service's pure domain: gates, policies, votes and timeouts (decision
signatures are checked against the wire model: `signoff.contracts.ApprovalDecision.signature_valid`).

No I/O here: no database, no broker, no wall clock (callers pass the time in; the clock is the runtime's), no
imports from ``signoff.runtime`` or ``signoff.contracts``. The service layer maps wire models to these types and the
returned domain events to outbox rows.
"""

from signoff.approval.domain.errors import InvalidDefinition, InvalidTimeout
from signoff.approval.domain.events import (
    DecisionRefused,
    GateApproved,
    GateCancelled,
    GateEvent,
    GateExpired,
    GateOpened,
    GateRejected,
    OutcomeEvent,
    VoteRecorded,
)
from signoff.approval.domain.gate import Gate, TokenFactory, new_token
from signoff.approval.domain.model import (
    ApprovalRule,
    Approver,
    ApproverInput,
    Comment,
    DecisionStatus,
    Directory,
    GateKey,
    GateStatus,
    Member,
    OutcomeCause,
    Policy,
    RuleProgress,
    TimeoutAction,
    Vote,
    user_key,
)
from signoff.approval.domain.refusals import RefusalReason
from signoff.approval.domain.timeouts import DEFAULT_TIMEOUT, effective_timeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApprovalRule",
    "Approver",
    "ApproverInput",
    "Comment",
    "DecisionRefused",
    "DecisionStatus",
    "Directory",
    "Gate",
    "GateApproved",
    "GateCancelled",
    "GateEvent",
    "GateExpired",
    "GateKey",
    "GateOpened",
    "GateRejected",
    "GateStatus",
    "InvalidDefinition",
    "InvalidTimeout",
    "Member",
    "OutcomeCause",
    "OutcomeEvent",
    "Policy",
    "RefusalReason",
    "RuleProgress",
    "TimeoutAction",
    "TokenFactory",
    "Vote",
    "VoteRecorded",
    "effective_timeout",
    "new_token",
    "user_key",
]
