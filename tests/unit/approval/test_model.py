"""Value types validate their shape and compare the way the rules need."""

from datetime import datetime

import pytest

from signoff.approval.domain import Directory, Member
from signoff.kernel import ApprovalRule, ApproverInput, GateKey, GateStatus, InvalidDefinition, Policy, user_key
from tests.unit.approval.builders import ALICE, BOB, KEY


class TestGateKey:
    def test_equal_keys_are_the_same_gate(self):
        assert GateKey("shop", "exec-1", "prod", "approve", 1) == KEY
        assert hash(GateKey("shop", "exec-1", "prod", "approve", 1)) == hash(KEY)

    @pytest.mark.parametrize("field", ["pipeline", "execution", "stage", "step"])
    @pytest.mark.parametrize("bad", ["", "   ", None])
    def test_blank_parts_are_invalid(self, field, bad):
        parts = {"pipeline": "p", "execution": "e", "stage": "s", "step": "a", "attempt": 1, field: bad}
        with pytest.raises(InvalidDefinition):
            GateKey(**parts)

    @pytest.mark.parametrize("attempt", [-1, True, 1.0, "1"])
    def test_attempt_must_be_a_non_negative_int(self, attempt):
        with pytest.raises(InvalidDefinition):
            GateKey("p", "e", "s", "a", attempt)

    def test_same_step_ignores_execution_and_attempt(self):
        assert KEY.same_step(GateKey("shop", "exec-2", "prod", "approve", 3))
        assert not KEY.same_step(GateKey("shop", "exec-2", "prod", "other-step", 1))
        assert not KEY.same_step(GateKey("shop", "exec-2", "staging", "approve", 1))
        assert not KEY.same_step(GateKey("blog", "exec-2", "prod", "approve", 1))

    def test_str_is_readable(self):
        assert str(KEY) == "shop/exec-1/prod/approve#1"


class TestMember:
    def test_key_is_case_and_blank_insensitive(self):
        assert Member("  Alice ").key == Member("alice").key == user_key("ALICE")

    def test_chat_handles_are_copied(self):
        handles = {"slack": "@a"}
        member = Member("a", chat_handles=handles)
        handles["slack"] = "@changed"
        assert member.chat_handles == {"slack": "@a"}

    def test_members_are_hashable_despite_handles(self):
        assert len({ALICE, ALICE, BOB}) == 2

    @pytest.mark.parametrize("bad", ["", " ", None])
    def test_user_id_required(self, bad):
        with pytest.raises(InvalidDefinition):
            Member(bad)


class TestApprovalRule:
    def test_lists_become_tuples(self):
        rule = ApprovalRule(user_groups=["qa"], users=["alice"], minimum_count=2)
        assert rule.user_groups == ("qa",)
        assert rule.users == ("alice",)

    def test_needs_someone(self):
        with pytest.raises(InvalidDefinition, match="at least one"):
            ApprovalRule()

    @pytest.mark.parametrize("count", [0, -1, True, 1.5])
    def test_minimum_count_is_a_positive_int(self, count):
        with pytest.raises(InvalidDefinition):
            ApprovalRule(user_groups=("qa",), minimum_count=count)

    def test_a_bare_string_is_not_a_list(self):
        with pytest.raises(InvalidDefinition, match="not the string"):
            ApprovalRule(user_groups="qa")

    def test_users_only_rule_cannot_ask_for_more_people_than_it_lists(self):
        with pytest.raises(InvalidDefinition, match="exceeds"):
            ApprovalRule(users=("alice", "ALICE"), minimum_count=2)  # the same person twice
        ApprovalRule(users=("alice", "bob"), minimum_count=2)

    def test_with_groups_the_count_is_checked_at_open_time(self):
        ApprovalRule(user_groups=("qa",), minimum_count=50)


class TestPolicy:
    def test_needs_a_rule(self):
        with pytest.raises(InvalidDefinition):
            Policy(rules=())

    def test_rules_must_be_rules(self):
        with pytest.raises(InvalidDefinition):
            Policy(rules=({"user_groups": ["qa"]},))

    def test_from_approvers_is_one_rule(self):
        policy = Policy.from_approvers(user_groups=["qa"], minimum_count=2, disallow_pipeline_executor=True)
        assert policy.rules == (ApprovalRule(user_groups=("qa",), minimum_count=2),)
        assert policy.disallow_pipeline_executor

    def test_executor_allowed_by_default(self):
        assert not Policy.from_approvers(users=["alice"]).disallow_pipeline_executor


class TestApproverInput:
    def test_empty_allowed_values_means_any(self):
        assert ApproverInput("env", allowed_values=()).allowed_values is None
        assert ApproverInput("env", allowed_values=[]).allows("anything")

    def test_allowed_values_restrict(self):
        choice = ApproverInput("env", allowed_values=["prod", "staging"])
        assert choice.allowed_values == ("prod", "staging")
        assert choice.allows("prod")
        assert not choice.allows("dev")
        assert choice.allows("")  # not providing a value is never a bad value
        assert choice.allows(None)

    def test_default_must_be_allowed(self):
        with pytest.raises(InvalidDefinition, match="default"):
            ApproverInput("env", default_value="dev", allowed_values=("prod",))

    def test_blank_default_is_no_default(self):
        assert not ApproverInput("env", default_value="").has_default
        assert ApproverInput("env", default_value="x").has_default

    def test_name_required(self):
        with pytest.raises(InvalidDefinition):
            ApproverInput("")

    def test_allowed_values_not_a_string(self):
        with pytest.raises(InvalidDefinition):
            ApproverInput("env", allowed_values="prod")


class TestDirectory:
    def test_membership_is_by_user_key(self):
        directory = Directory({"qa": [ALICE]})
        assert directory.is_member("ALICE", "qa")
        assert not directory.is_member("bob", "qa")

    def test_unknown_group_has_no_members(self):
        directory = Directory({"qa": [ALICE]})
        assert directory.members_of("sre") == ()
        assert not directory.is_member("alice", "sre")

    def test_email_of_a_member_by_user_key_from_any_group(self):
        directory = Directory({"qa": [Member("bob")], "sre": [Member("Bob", email="bob@example.com")]})
        assert directory.email_of(" BOB ") == "bob@example.com"
        assert directory.email_of("carol") is None
        assert Directory({"qa": [Member("bob")]}).email_of("bob") is None

    def test_group_names_are_exact(self):
        assert not Directory({"qa": [ALICE]}).is_member("alice", "QA")

    def test_snapshot_is_copied(self):
        source = {"qa": [ALICE]}
        directory = Directory(source)
        source["qa"].append(BOB)
        assert directory.members_of("qa") == (ALICE,)
        assert directory.members_by_group == {"qa": (ALICE,)}

    def test_members_must_be_members(self):
        with pytest.raises(InvalidDefinition):
            Directory({"qa": ["alice"]})

    def test_equality(self):
        assert Directory({"qa": [ALICE]}) == Directory({"qa": (ALICE,)})
        assert Directory({"qa": [ALICE]}) != Directory({"qa": [BOB]})


def test_only_pending_is_not_final():
    assert [status for status in GateStatus if not status.is_final] == [GateStatus.PENDING]


def test_naive_datetimes_are_refused_everywhere():
    from signoff.approval.domain.model import require_aware

    with pytest.raises(InvalidDefinition):
        require_aware(datetime(2025, 1, 1), "at")
