"""Domain events: what happened to a gate, in the past tense. The service maps them to wire events in the outbox.

Every event carries ``gate_key`` and ``at`` (when it happened, by the clock the caller passed in). Mappings inside
events are fresh dicts owned by the event; sequences are tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from signoff.approval.domain.model import Approver, Comment, Member, OutcomeCause, RuleProgress
from signoff.approval.domain.refusals import RefusalReason
from signoff.kernel import ApproverInput, DecisionStatus, GateKey, Policy, TimeoutAction


@dataclass(frozen=True)
class GateOpened:
    """A gate started waiting for approvers.

    ``token`` is published on purpose: the notifier builds approve / reject links with it, and CodePipeline shows it
    in ``get-pipeline-state``. It guards against stale decisions; authenticity comes from decision signatures.
    ``approvers`` are the people who may decide (group members and listed users, the executor left out when
    disallowed), for notifications. ``unsatisfiable_rules`` lists the indexes of rules that have fewer eligible
    people than their minimum count: such a gate can only expire, be rejected or be cancelled.
    """

    gate_key: GateKey
    at: datetime
    token: str
    expires_at: datetime
    timeout_action: TimeoutAction
    policy: Policy
    inputs: tuple[ApproverInput, ...]
    pipeline_executor: str | None
    approvers: tuple[Member, ...]
    unsatisfiable_rules: tuple[int, ...] = ()


@dataclass(frozen=True)
class VoteRecorded:
    """An eligible approver's decision was accepted. ``replaced_decision_id`` names their earlier vote it replaces."""

    gate_key: GateKey
    at: datetime
    decision_id: str
    approver: Approver
    status: DecisionStatus
    comment: str
    inputs: dict[str, str]
    replaced_decision_id: str | None
    progress: tuple[RuleProgress, ...]


@dataclass(frozen=True)
class GateApproved:
    """The gate was approved: by votes (every rule reached its minimum count) or by its timeout action.

    ``inputs`` are the final values of every declared input (last approver's value wins, defaults fill the rest,
    ``""`` when neither). ``approvers`` are those whose current vote is an approval, in vote order.
    """

    gate_key: GateKey
    at: datetime
    cause: OutcomeCause
    inputs: dict[str, str]
    approvers: tuple[Approver, ...]
    comments: tuple[Comment, ...]


@dataclass(frozen=True)
class GateRejected:
    """The gate was rejected: by an eligible approver, by its timeout action, or superseded by a newer gate.

    ``rejected_by`` / ``comment`` are set for a rejection by vote; ``superseded_by`` for a superseded gate.
    """

    gate_key: GateKey
    at: datetime
    cause: OutcomeCause
    rejected_by: Approver | None = None
    comment: str = ""
    superseded_by: GateKey | None = None
    comments: tuple[Comment, ...] = ()


@dataclass(frozen=True)
class GateExpired:
    """The gate reached its deadline with timeout action ``FAIL``: the pipeline fails."""

    gate_key: GateKey
    at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class GateCancelled:
    """The pipeline withdrew its gate (execution aborted)."""

    gate_key: GateKey
    at: datetime
    reason: str


@dataclass(frozen=True)
class DecisionRefused:
    """A decision that did not count, and why. Recorded in the audit trail and published so the sender learns why.

    ``gate_key`` is ``None`` only when the service refuses a decision whose gate it could not identify.
    ``offending_inputs`` names the inputs at fault for ``invalid_inputs``.
    """

    gate_key: GateKey | None
    at: datetime
    decision_id: str
    approver: Approver | None
    status: DecisionStatus | None
    reason: RefusalReason
    detail: str
    offending_inputs: tuple[str, ...] = field(default=())


GateEvent: TypeAlias = (
    GateOpened | VoteRecorded | GateApproved | GateRejected | GateExpired | GateCancelled | DecisionRefused
)
"""Any event the approval domain produces."""

OutcomeEvent: TypeAlias = GateApproved | GateRejected | GateExpired | GateCancelled
"""The events that close a gate; exactly one is ever produced per gate."""
