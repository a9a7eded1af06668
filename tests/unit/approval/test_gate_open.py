"""Opening a gate: token, deadline, the GateOpened event, and definitions refused up front."""

from datetime import timedelta

import pytest

from signoff.approval.domain import Directory, Gate, GateOpened, Member, new_token
from signoff.kernel import ApprovalRule, ApproverInput, GateStatus, InvalidDefinition, Policy, TimeoutAction
from tests.unit.approval.builders import ALICE, BOB, CAROL, DAVE, ERIN, GROUPS, KEY, T0, TOKEN, open_gate


def test_open_returns_a_pending_gate_and_gate_opened():
    policy = Policy.from_approvers(user_groups=["qa"])
    inputs = (ApproverInput("reason", default_value="routine"),)
    gate, events = Gate.open(
        KEY, policy, inputs, GROUPS, "mallory", T0, timedelta(hours=2), TimeoutAction.REJECT, lambda: "tok"
    )
    assert gate.status is GateStatus.PENDING
    assert gate.token == "tok"
    assert gate.expires_at == T0 + timedelta(hours=2)
    assert gate.opened_at == T0
    assert gate.closed_at is None
    assert events == [
        GateOpened(
            gate_key=KEY,
            at=T0,
            token="tok",
            expires_at=T0 + timedelta(hours=2),
            timeout_action=TimeoutAction.REJECT,
            policy=policy,
            inputs=inputs,
            pipeline_executor="mallory",
            approvers=(ALICE, BOB),
            unsatisfiable_rules=(),
        )
    ]


def test_default_token_is_fresh_and_unguessable():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(token) >= 32 for token in tokens)
    gate_a, _ = Gate.open(KEY, Policy.from_approvers(users=["alice"]), (), {}, None, T0, timedelta(hours=1))
    gate_b, _ = Gate.open(KEY, Policy.from_approvers(users=["alice"]), (), {}, None, T0, timedelta(hours=1))
    assert gate_a.token != gate_b.token


def test_timeout_action_defaults_to_fail():
    gate, _ = Gate.open(KEY, Policy.from_approvers(users=["alice"]), (), {}, None, T0, timedelta(hours=1))
    assert gate.timeout_action is TimeoutAction.FAIL


def test_membership_is_a_snapshot_taken_at_open():
    groups = {"qa": [ALICE]}
    gate = open_gate(members_by_group=groups)
    groups["qa"].append(BOB)  # joined after the request: too late for this gate
    assert gate.is_eligible("alice")
    assert not gate.is_eligible("bob")
    assert gate.directory == Directory({"qa": [ALICE]})


def test_a_directory_can_be_passed_as_is():
    directory = Directory({"qa": [ALICE]})
    gate, _ = Gate.open(KEY, Policy.from_approvers(user_groups=["qa"]), (), directory, None, T0, timedelta(hours=1))
    assert gate.directory is directory


def test_approvers_are_everyone_who_may_decide_once_each_without_the_banned_executor():
    policy = Policy(
        rules=(
            ApprovalRule(user_groups=("qa",), users=("zoe", "Carol")),
            ApprovalRule(user_groups=("sre", "qa"), minimum_count=2),
        ),
        disallow_pipeline_executor=True,
    )
    gate = open_gate(policy, pipeline_executor="DAVE")
    assert gate.eligible_approvers() == (ALICE, BOB, CAROL, ERIN, Member("zoe"))


def test_the_executor_is_listed_when_allowed():
    gate = open_gate(Policy.from_approvers(user_groups=["sre"]), pipeline_executor="dave")
    assert DAVE in gate.eligible_approvers()


class TestUnsatisfiableRules:
    def test_fewer_members_than_the_minimum(self):
        policy = Policy(rules=(ApprovalRule(user_groups=("qa",)), ApprovalRule(user_groups=("qa",), minimum_count=3)))
        gate = open_gate(policy)
        assert gate.unsatisfiable_rules() == (1,)

    def test_unresolved_group_is_empty(self):
        gate = open_gate(Policy.from_approvers(user_groups=["ghosts"]))
        assert gate.unsatisfiable_rules() == (0,)

    def test_banned_executor_does_not_count_towards_what_is_possible(self):
        policy = Policy.from_approvers(user_groups=["qa"], minimum_count=2, disallow_pipeline_executor=True)
        assert open_gate(policy, pipeline_executor="alice").unsatisfiable_rules() == (0,)
        assert open_gate(policy, pipeline_executor="someone-else").unsatisfiable_rules() == ()

    def test_listed_users_and_members_are_counted_once(self):
        policy = Policy.from_approvers(user_groups=["qa"], users=["ALICE"], minimum_count=3)
        assert open_gate(policy).unsatisfiable_rules() == (0,)

    def test_reported_in_gate_opened(self):
        _, events = Gate.open(
            KEY, Policy.from_approvers(user_groups=["ghosts"]), (), GROUPS, None, T0, timedelta(hours=1)
        )
        assert events[0].unsatisfiable_rules == (0,)


class TestRefusedDefinitions:
    @pytest.mark.parametrize("timeout", [timedelta(0), timedelta(seconds=-1), 3600])
    def test_timeout_must_be_positive(self, timeout):
        with pytest.raises(InvalidDefinition, match="timeout"):
            open_gate(timeout=timeout)

    def test_opened_at_must_be_aware(self):
        with pytest.raises(InvalidDefinition):
            Gate.open(KEY, Policy.from_approvers(users=["a"]), (), {}, None, T0.replace(tzinfo=None), timedelta(1))

    def test_input_names_unique(self):
        with pytest.raises(InvalidDefinition, match="unique"):
            open_gate(inputs=(ApproverInput("x"), ApproverInput("x")))

    def test_auto_approve_needs_defaults_for_required_inputs(self):
        with pytest.raises(InvalidDefinition, match="ticket"):
            open_gate(inputs=(ApproverInput("ticket", required=True),), timeout_action=TimeoutAction.APPROVE)
        open_gate(
            inputs=(ApproverInput("ticket", required=True, default_value="none"),),
            timeout_action=TimeoutAction.APPROVE,
        )
        open_gate(inputs=(ApproverInput("ticket", required=True),), timeout_action=TimeoutAction.REJECT)

    def test_empty_token_from_factory(self):
        with pytest.raises(InvalidDefinition, match="token"):
            Gate.open(KEY, Policy.from_approvers(users=["a"]), (), {}, None, T0, timedelta(1), token_factory=str)


def test_rehydrated_gate_behaves_like_the_original():
    original = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
    from tests.unit.approval.builders import vote

    vote(original, ALICE)
    restored = Gate(
        key=original.key,
        policy=original.policy,
        inputs=original.inputs,
        directory=Directory(original.directory.members_by_group),
        pipeline_executor=original.pipeline_executor,
        token=original.token,
        opened_at=original.opened_at,
        expires_at=original.expires_at,
        timeout_action=original.timeout_action,
        status=original.status,
        votes=original.votes,
        closed_at=original.closed_at,
    )
    assert restored.progress() == original.progress()
    events = vote(restored, BOB, token=TOKEN)
    assert restored.status is GateStatus.APPROVED
    assert [a.user_id for a in events[-1].approvers] == ["alice", "bob"]


def test_rehydrating_a_final_gate_keeps_it_final():
    gate = Gate(
        key=KEY,
        policy=Policy.from_approvers(users=["alice"]),
        inputs=(),
        directory=Directory(),
        pipeline_executor=None,
        token=TOKEN,
        opened_at=T0,
        expires_at=T0 + timedelta(hours=1),
        status="cancelled",
        closed_at=T0 + timedelta(minutes=5),
    )
    assert gate.status is GateStatus.CANCELLED
    assert gate.cancel("again", T0 + timedelta(minutes=6)) == []
