"""Small builders for approval-domain tests: a fixed time origin, people, and a gate opened with sensible defaults."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from signoff.approval.domain import Approver, Gate, GateEvent, Member
from signoff.kernel import ApprovalRule, ApproverInput, DecisionStatus, GateKey, Policy, TimeoutAction

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "token-0"
KEY = GateKey(pipeline="shop", execution="exec-1", stage="prod", step="approve", attempt=1)

ALICE = Member(user_id="alice", email="alice@example.com", chat_handles={"slack": "@alice"})
BOB = Member(user_id="bob", email="bob@example.com")
CAROL = Member(user_id="carol")
DAVE = Member(user_id="dave")
ERIN = Member(user_id="erin")
MALLORY = Member(user_id="mallory")

GROUPS: dict[str, tuple[Member, ...]] = {
    "qa": (ALICE, BOB),
    "sre": (CAROL, DAVE, ERIN),
}

_decision_ids = itertools.count(1)


def open_gate(
    policy: Policy | None = None,
    *,
    inputs: Iterable[ApproverInput] = (),
    members_by_group: Mapping[str, Iterable[Member]] | None = None,
    pipeline_executor: str | None = None,
    timeout: timedelta = timedelta(hours=1),
    timeout_action: TimeoutAction = TimeoutAction.FAIL,
    key: GateKey = KEY,
) -> Gate:
    """A gate opened at T0 with token TOKEN; by default one approval from the qa group is enough."""
    gate, _ = Gate.open(
        key,
        policy or Policy(rules=(ApprovalRule(user_groups=("qa",)),)),
        inputs,
        GROUPS if members_by_group is None else members_by_group,
        pipeline_executor,
        T0,
        timeout,
        timeout_action,
        token_factory=lambda: TOKEN,
    )
    return gate


def vote(
    gate: Gate,
    approver: Approver,
    status: DecisionStatus = DecisionStatus.APPROVE,
    *,
    token: str | None = TOKEN,
    comment: str = "",
    inputs: Mapping[str, str] | None = None,
    at: datetime | None = None,
    decision_id: str | None = None,
) -> list[GateEvent]:
    """Cast a decision with the gate's token, a minute after T0, under a fresh decision id unless given."""
    return gate.decide(
        decision_id=decision_id or f"d-{next(_decision_ids)}",
        approver=approver,
        status=status,
        token=token,
        comment=comment,
        inputs=inputs,
        at=at or T0 + timedelta(minutes=1),
        source="cli",
    )


def kinds(events: Iterable[GateEvent]) -> list[str]:
    """Event class names, for compact assertions on what happened."""
    return [type(event).__name__ for event in events]
