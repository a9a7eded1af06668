"""The approval service's pure domain: gates, policies, votes and timeouts (decision
signatures are checked against the wire model: `signoff.contracts.ApprovalDecision.signature_valid`).

No I/O here: no database, no broker, no wall clock (callers pass the time in; the clock is the runtime's), no
imports from ``signoff.runtime`` or ``signoff.contracts``. The service layer maps wire models to these types and the
returned domain events to outbox rows.
"""

from signoff.approval.domain.errors import InvalidTimeout
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
    Approver,
    Comment,
    Directory,
    Member,
    OutcomeCause,
    RuleProgress,
    Vote,
)
from signoff.approval.domain.refusals import RefusalReason
from signoff.approval.domain.timeouts import DEFAULT_TIMEOUT, effective_timeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "Approver",
    "Comment",
    "DecisionRefused",
    "Directory",
    "Gate",
    "GateApproved",
    "GateCancelled",
    "GateEvent",
    "GateExpired",
    "GateOpened",
    "GateRejected",
    "InvalidTimeout",
    "Member",
    "OutcomeCause",
    "OutcomeEvent",
    "RefusalReason",
    "RuleProgress",
    "TokenFactory",
    "Vote",
    "VoteRecorded",
    "effective_timeout",
    "new_token",
]
