"""Property-style checks: random policies and decision sequences, compared with a small independent oracle.

hypothesis is not installed, so each case is a seeded random scenario; a failure names its seed to replay.
"""

import random
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from signoff.approval.domain import (
    Approver,
    DecisionRefused,
    GateApproved,
    GateRejected,
    Member,
    RefusalReason,
    VoteRecorded,
)
from signoff.kernel import ApprovalRule, ApproverInput, DecisionStatus, GateStatus, Policy
from tests.unit.approval.builders import T0, TOKEN, open_gate

PEOPLE = ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"]
GROUP_NAMES = ["qa", "sre", "ops"]
WINDOW = ApproverInput("window", default_value="d", allowed_values=("a", "b", "d"))


@dataclass
class Scenario:
    groups: dict[str, list[str]]
    rules: list[tuple[list[str], list[str], int]]
    executor: str
    disallow: bool
    decisions: list[tuple[str, DecisionStatus, bool, str | None]] = field(default_factory=list)


def make_scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    groups = {name: rng.sample(PEOPLE, rng.randint(0, 4)) for name in GROUP_NAMES}
    rules = []
    for _ in range(rng.randint(1, 3)):
        rule_groups = rng.sample(GROUP_NAMES, rng.randint(0, 2))
        users = rng.sample(PEOPLE, rng.randint(0 if rule_groups else 1, 2))
        ceiling = len(users) if not rule_groups else 3
        rules.append((rule_groups, users, rng.randint(1, max(1, ceiling))))
    scenario = Scenario(groups, rules, executor=rng.choice(PEOPLE), disallow=rng.random() < 0.5)
    for _ in range(rng.randint(1, 12)):
        status = DecisionStatus.REJECT if rng.random() < 0.15 else DecisionStatus.APPROVE
        good_token = rng.random() < 0.9
        window = rng.choice([None, "", "a", "b", "c"])
        scenario.decisions.append((rng.choice([*PEOPLE, "zed"]), status, good_token, window))
    return scenario


def oracle_counts(scenario: Scenario, rule_index: int, user: str) -> bool:
    groups, users, _ = scenario.rules[rule_index]
    return user in users or any(user in scenario.groups[g] for g in groups)


def oracle_approvers(scenario: Scenario, latest: dict, rule_index: int) -> set[str]:
    return {
        user
        for user, (_, status, _) in latest.items()
        if status is DecisionStatus.APPROVE and oracle_counts(scenario, rule_index, user)
    }


@pytest.mark.parametrize("seed", range(400))
def test_gate_matches_oracle(seed):
    scenario = make_scenario(seed)
    policy = Policy(
        rules=tuple(ApprovalRule(user_groups=g, users=u, minimum_count=m) for g, u, m in scenario.rules),
        disallow_pipeline_executor=scenario.disallow,
    )
    gate = open_gate(
        policy,
        inputs=(WINDOW,),
        members_by_group={g: [Member(p) for p in people] for g, people in scenario.groups.items()},
        pipeline_executor=scenario.executor,
        timeout=timedelta(days=1),
    )

    status = GateStatus.PENDING
    latest: dict[str, tuple[int, DecisionStatus, str | None]] = {}  # user -> (order, status, window)
    outcomes = 0
    for step, (user, decision, good_token, window) in enumerate(scenario.decisions):
        context = f"seed={seed} step={step} scenario={scenario}"
        events = gate.decide(
            decision_id=f"{seed}-{step}",
            approver=Approver(user),
            status=decision,
            token=TOKEN if good_token else "stale",
            inputs={} if window is None else {"window": window},
            at=T0 + timedelta(minutes=step),
            source="cli",
        )
        outcomes += sum(isinstance(e, GateApproved | GateRejected) for e in events)

        eligible = any(oracle_counts(scenario, i, user) for i in range(len(scenario.rules)))
        if status is not GateStatus.PENDING:
            expected = RefusalReason.GATE_CLOSED
        elif not good_token:
            expected = RefusalReason.STALE_TOKEN
        elif scenario.disallow and user == scenario.executor:
            expected = RefusalReason.SELF_APPROVAL
        elif not eligible:
            expected = RefusalReason.NOT_ELIGIBLE
        elif decision is DecisionStatus.APPROVE and window == "c":
            expected = RefusalReason.INVALID_INPUTS
        else:
            expected = None

        if expected is not None:
            assert len(events) == 1, context
            assert isinstance(events[0], DecisionRefused), context
            assert events[0].reason is expected, context
        else:
            assert isinstance(events[0], VoteRecorded), context
            kept = window if decision is DecisionStatus.APPROVE else None
            latest[user] = (step, decision, kept)
            if decision is DecisionStatus.REJECT:
                status = GateStatus.REJECTED
            elif all(
                len(oracle_approvers(scenario, latest, i)) >= scenario.rules[i][2] for i in range(len(scenario.rules))
            ):
                status = GateStatus.APPROVED
            expected_kinds = {
                GateStatus.PENDING: [VoteRecorded],
                GateStatus.APPROVED: [VoteRecorded, GateApproved],
                GateStatus.REJECTED: [VoteRecorded, GateRejected],
            }[status]
            assert [type(e) for e in events] == expected_kinds, context
        assert gate.status is status, context

        # Final inputs: the latest approving vote with a non-blank value wins, else the default.
        approving = sorted((order, w) for order, s, w in latest.values() if s is DecisionStatus.APPROVE and w)
        assert gate.final_inputs() == {"window": approving[-1][1] if approving else "d"}, context

    assert outcomes <= 1
    if status is GateStatus.APPROVED:
        # The outcome never lists a non-eligible or banned approver, and lists each approver once.
        approver_ids = [v.approver.user_id for v in gate.current_votes() if v.status is DecisionStatus.APPROVE]
        assert len(approver_ids) == len(set(approver_ids))
        assert not (scenario.disallow and scenario.executor in approver_ids)


@pytest.mark.parametrize("seed", range(50))
def test_votes_are_order_independent_for_approval(seed):
    """With approvals only, the final status does not depend on the order they arrive in."""
    rng = random.Random(seed)
    members = {"qa": [Member(p) for p in PEOPLE[:4]], "sre": [Member(p) for p in PEOPLE[3:]]}
    policy = Policy(rules=(ApprovalRule(user_groups=("qa",), minimum_count=2), ApprovalRule(user_groups=("sre",))))
    voters = rng.sample(PEOPLE, rng.randint(1, len(PEOPLE)))
    results = set()
    for _ in range(5):
        rng.shuffle(voters)
        gate = open_gate(policy, members_by_group=members)
        for name in voters:
            gate.decide(
                decision_id=f"{name}-{rng.random()}",
                approver=Approver(name),
                status="approve",
                token=TOKEN,
                at=T0,
                source="cli",
            )
        results.add(gate.status)
    assert len(results) == 1
