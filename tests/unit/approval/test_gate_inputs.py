"""Approver inputs: defaults, required, allowed values, unknown names, last approver wins."""

import pytest

from signoff.approval.domain import DecisionRefused, RefusalReason
from signoff.kernel import ApproverInput, DecisionStatus, GateStatus, Policy
from tests.unit.approval.builders import ALICE, BOB, CAROL, kinds, open_gate, vote

QUORUM_3 = Policy.from_approvers(user_groups=["qa", "sre"], minimum_count=3)


def refused(events) -> DecisionRefused:
    assert isinstance(events[-1], DecisionRefused), events
    assert events[-1].reason is RefusalReason.INVALID_INPUTS
    return events[-1]


class TestDefaults:
    def test_defaults_fill_what_nobody_set(self):
        gate = open_gate(inputs=(ApproverInput("window", default_value="now"), ApproverInput("ticket")))
        events = vote(gate, ALICE)
        assert events[-1].inputs == {"window": "now", "ticket": ""}

    def test_an_approver_value_overrides_the_default(self):
        gate = open_gate(inputs=(ApproverInput("window", default_value="now"),))
        assert vote(gate, ALICE, inputs={"window": "tonight"})[-1].inputs == {"window": "tonight"}

    def test_blank_value_keeps_the_default(self):
        gate = open_gate(inputs=(ApproverInput("window", default_value="now"),))
        assert vote(gate, ALICE, inputs={"window": ""})[-1].inputs == {"window": "now"}

    def test_outcome_lists_inputs_in_declaration_order(self):
        gate = open_gate(inputs=(ApproverInput("b"), ApproverInput("a"), ApproverInput("c")))
        assert list(vote(gate, ALICE, inputs={"c": "3", "a": "1"})[-1].inputs) == ["b", "a", "c"]


class TestLastApproverWins:
    def test_later_approver_overrides_earlier(self):
        gate = open_gate(QUORUM_3, inputs=(ApproverInput("window", default_value="now"), ApproverInput("note")))
        vote(gate, ALICE, inputs={"window": "tonight", "note": "from alice"})
        vote(gate, BOB, inputs={"window": "weekend"})
        events = vote(gate, CAROL)
        assert events[-1].inputs == {"window": "weekend", "note": "from alice"}

    def test_blank_from_a_later_approver_does_not_erase(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2), inputs=(ApproverInput("w"),))
        vote(gate, ALICE, inputs={"w": "tonight"})
        assert vote(gate, BOB, inputs={"w": ""})[-1].inputs == {"w": "tonight"}

    def test_changing_a_vote_makes_you_the_last_approver(self):
        gate = open_gate(QUORUM_3, inputs=(ApproverInput("w"),))
        vote(gate, ALICE, inputs={"w": "a1"})
        vote(gate, BOB, inputs={"w": "b1"})
        vote(gate, ALICE, inputs={"w": "a2"})
        assert gate.final_inputs() == {"w": "a2"}
        assert vote(gate, CAROL)[-1].inputs == {"w": "a2"}

    def test_a_replaced_vote_value_is_gone(self):
        gate = open_gate(QUORUM_3, inputs=(ApproverInput("w", default_value="d"),))
        vote(gate, ALICE, inputs={"w": "first"})
        vote(gate, ALICE, inputs={})
        assert gate.final_inputs() == {"w": "d"}


class TestAllowedValues:
    INPUTS = (ApproverInput("env", allowed_values=("prod", "staging")),)

    def test_allowed_value_accepted(self):
        gate = open_gate(inputs=self.INPUTS)
        assert vote(gate, ALICE, inputs={"env": "staging"})[-1].inputs == {"env": "staging"}

    def test_value_outside_allowed_refused(self):
        gate = open_gate(inputs=self.INPUTS)
        refusal = refused(vote(gate, ALICE, inputs={"env": "dev"}))
        assert refusal.offending_inputs == ("env",)
        assert "'dev' is not one of: prod, staging" in refusal.detail
        assert gate.status is GateStatus.PENDING
        assert gate.votes == ()

    def test_allowed_values_are_case_sensitive(self):
        refusal = refused(vote(open_gate(inputs=self.INPUTS), ALICE, inputs={"env": "PROD"}))
        assert refusal.offending_inputs == ("env",)
        assert "'PROD' is not one of: prod, staging" in refusal.detail


class TestUnknownInputs:
    def test_unknown_name_refused_with_its_name(self):
        gate = open_gate(inputs=(ApproverInput("env"),))
        refusal = refused(vote(gate, ALICE, inputs={"zeta": "1", "alpha": "2", "env": "x"}))
        assert refusal.offending_inputs == ("alpha", "zeta")
        assert refusal.detail == "unknown input(s): alpha, zeta"

    def test_gate_without_inputs_refuses_any(self):
        gate = open_gate()
        refusal = refused(vote(gate, ALICE, inputs={"env": "prod"}))
        assert refusal.offending_inputs == ("env",)
        assert refusal.detail == "unknown input(s): env"
        assert gate.votes == ()


class TestRequired:
    def test_required_without_value_or_default_refuses_the_approval(self):
        gate = open_gate(inputs=(ApproverInput("ticket", required=True), ApproverInput("other", required=True)))
        refusal = refused(vote(gate, ALICE))
        assert refusal.offending_inputs == ("ticket", "other")
        assert refusal.detail == "missing required input(s): ticket, other"

    @pytest.mark.parametrize("value", ["", None])
    def test_blank_does_not_satisfy_required(self, value):
        gate = open_gate(inputs=(ApproverInput("ticket", required=True),))
        refused(vote(gate, ALICE, inputs={} if value is None else {"ticket": value}))

    def test_required_with_value_accepted(self):
        gate = open_gate(inputs=(ApproverInput("ticket", required=True),))
        assert vote(gate, ALICE, inputs={"ticket": "CHG-1"})[-1].inputs == {"ticket": "CHG-1"}

    def test_required_with_default_needs_nothing(self):
        gate = open_gate(inputs=(ApproverInput("ticket", required=True, default_value="CHG-0"),))
        assert vote(gate, ALICE)[-1].inputs == {"ticket": "CHG-0"}

    def test_required_already_provided_by_an_earlier_approver(self):
        gate = open_gate(
            Policy.from_approvers(user_groups=["qa"], minimum_count=2), inputs=(ApproverInput("t", required=True),)
        )
        vote(gate, ALICE, inputs={"t": "CHG-1"})
        events = vote(gate, BOB)
        assert kinds(events) == ["VoteRecorded", "GateApproved"]
        assert events[-1].inputs == {"t": "CHG-1"}

    def test_own_earlier_vote_does_not_satisfy_required(self):
        # The new vote replaces the old one, so the old value would vanish with it.
        gate = open_gate(
            Policy.from_approvers(user_groups=["qa"], minimum_count=2), inputs=(ApproverInput("t", required=True),)
        )
        vote(gate, ALICE, inputs={"t": "CHG-1"})
        refused(vote(gate, ALICE))
        assert gate.final_inputs() == {"t": "CHG-1"}  # the refused change left the first vote in place

    def test_a_rejection_is_never_refused_for_missing_inputs(self):
        gate = open_gate(inputs=(ApproverInput("t", required=True),))
        assert kinds(vote(gate, ALICE, DecisionStatus.REJECT)) == ["VoteRecorded", "GateRejected"]

    def test_all_problems_reported_together(self):
        gate = open_gate(inputs=(ApproverInput("env", allowed_values=("prod",)), ApproverInput("t", required=True)))
        refusal = refused(vote(gate, ALICE, inputs={"env": "dev", "x": "1"}))
        assert refusal.offending_inputs == ("x", "env", "t")
        assert refusal.detail.count(";") == 2


class TestInputErrorsByField:
    """`Gate.input_errors`: what `decide` would refuse for the inputs, per input name (for a form's fields)."""

    def test_each_offending_input_has_its_problem_and_acceptable_inputs_none(self):
        gate = open_gate(
            inputs=(
                ApproverInput("region", default_value="eu", allowed_values=("eu", "us")),
                ApproverInput("ticket", required=True),
                ApproverInput("note"),
            )
        )
        errors = gate.input_errors("alice", {"region": "mars", "color": "red"})
        assert errors == {
            "color": "this gate has no such input",
            "region": "'mars' is not one of: eu, us",
            "ticket": "required: give it a value",
        }
        assert gate.input_errors("alice", {"region": "us", "ticket": "CHG-1"}) == {}

    def test_it_agrees_with_decide(self):
        gate = open_gate(inputs=(ApproverInput("ticket", required=True),))
        assert set(gate.input_errors("alice", {})) == {"ticket"}
        refused(vote(gate, ALICE))
        assert gate.input_errors("alice", {"ticket": "CHG-1"}) == {}
        assert vote(gate, ALICE, inputs={"ticket": "CHG-1"})[-1].inputs == {"ticket": "CHG-1"}
