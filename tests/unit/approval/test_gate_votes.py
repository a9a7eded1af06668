"""Deciding a gate: quorum, AND rules, eligibility, self-approval, tokens, vote changes, rejection, closed gates."""

from datetime import timedelta

import pytest

from signoff.approval.domain import (
    Approver,
    Comment,
    DecisionRefused,
    GateApproved,
    GateRejected,
    OutcomeCause,
    RefusalReason,
    RuleProgress,
    VoteRecorded,
)
from signoff.kernel import ApprovalRule, DecisionStatus, GateStatus, InvalidDefinition, Policy
from tests.unit.approval.builders import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    KEY,
    MALLORY,
    T0,
    TOKEN,
    kinds,
    open_gate,
    vote,
)

APPROVE = DecisionStatus.APPROVE
REJECT = DecisionStatus.REJECT
AT = T0 + timedelta(minutes=1)


def refusal(events) -> RefusalReason:
    assert isinstance(events[-1], DecisionRefused), events
    return events[-1].reason


class TestQuorum:
    def test_one_approval_is_enough_by_default(self):
        gate = open_gate()
        events = vote(gate, ALICE, comment="lgtm", decision_id="d1", at=AT)
        assert kinds(events) == ["VoteRecorded", "GateApproved"]
        assert events[1] == GateApproved(
            gate_key=KEY,
            at=AT,
            cause=OutcomeCause.VOTES,
            inputs={},
            approvers=(ALICE,),
            comments=(Comment("alice", APPROVE, "lgtm", AT),),
        )
        assert gate.status is GateStatus.APPROVED
        assert gate.closed_at == AT

    def test_two_distinct_approvers_needed(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        assert kinds(vote(gate, ALICE)) == ["VoteRecorded"]
        assert gate.status is GateStatus.PENDING
        assert kinds(vote(gate, BOB)) == ["VoteRecorded", "GateApproved"]

    def test_same_approver_twice_counts_once(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        vote(gate, ALICE)
        events = vote(gate, ALICE)
        assert kinds(events) == ["VoteRecorded"]
        assert gate.status is GateStatus.PENDING
        assert gate.progress()[0].approved_by == ("alice",)

    def test_same_approver_under_another_spelling_counts_once(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        vote(gate, ALICE)
        vote(gate, Approver(" ALICE "))
        assert gate.status is GateStatus.PENDING
        assert len(gate.current_votes()) == 1

    def test_listed_users_count_without_a_group(self):
        gate = open_gate(Policy.from_approvers(users=["zoe", "yan"], minimum_count=2))
        vote(gate, Approver("zoe"))
        assert kinds(vote(gate, Approver("Yan"))) == ["VoteRecorded", "GateApproved"]

    def test_vote_recorded_reports_progress(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        events = vote(gate, ALICE, decision_id="d1", comment="ok", inputs={}, at=AT)
        assert events == [
            VoteRecorded(
                gate_key=KEY,
                at=AT,
                decision_id="d1",
                approver=ALICE,
                status=APPROVE,
                comment="ok",
                inputs={},
                replaced_decision_id=None,
                progress=(RuleProgress(rule_index=0, minimum_count=2, approved_by=("alice",)),),
            )
        ]
        assert events[0].progress[0].remaining == 1
        assert not events[0].progress[0].satisfied


class TestSeveralRules:
    """One of qa AND two of sre."""

    POLICY = Policy(
        rules=(ApprovalRule(user_groups=("qa",)), ApprovalRule(user_groups=("sre",), minimum_count=2)),
    )

    @pytest.mark.parametrize(
        "approvers, approved",
        [
            ((ALICE,), False),
            ((CAROL, DAVE), False),
            ((ALICE, CAROL), False),
            ((ALICE, BOB, CAROL), False),
            ((ALICE, CAROL, DAVE), True),
            ((CAROL, DAVE, BOB), True),
            ((CAROL, ALICE, ERIN), True),
        ],
    )
    def test_every_rule_must_pass(self, approvers, approved):
        gate = open_gate(self.POLICY)
        for approver in approvers:
            vote(gate, approver)
        assert (gate.status is GateStatus.APPROVED) is approved

    def test_progress_per_rule(self):
        gate = open_gate(self.POLICY)
        vote(gate, ALICE)
        vote(gate, CAROL)
        assert gate.progress() == (
            RuleProgress(0, 1, ("alice",)),
            RuleProgress(1, 2, ("carol",)),
        )
        assert [p.satisfied for p in gate.progress()] == [True, False]

    def test_a_person_in_two_rules_counts_for_each(self):
        # Documented choice: counting is per rule; disjoint groups are how a policy demands distinct people.
        policy = Policy(rules=(ApprovalRule(users=("alice",)), ApprovalRule(user_groups=("qa",))))
        gate = open_gate(policy)
        assert kinds(vote(gate, ALICE)) == ["VoteRecorded", "GateApproved"]

    def test_outcome_lists_approvers_in_vote_order(self):
        gate = open_gate(self.POLICY)
        vote(gate, DAVE)
        vote(gate, ALICE)
        events = vote(gate, CAROL)
        assert events[-1].approvers == (DAVE, ALICE, CAROL)


class TestEligibility:
    def test_non_member_refused(self):
        gate = open_gate()
        events = vote(gate, MALLORY, decision_id="d9", at=AT)
        assert events == [
            DecisionRefused(
                gate_key=KEY,
                at=AT,
                decision_id="d9",
                approver=MALLORY,
                status=APPROVE,
                reason=RefusalReason.NOT_ELIGIBLE,
                detail="mallory is not a listed approver or group member",
            )
        ]
        assert gate.votes == ()
        assert gate.status is GateStatus.PENDING

    def test_non_member_cannot_reject_either(self):
        gate = open_gate()
        assert refusal(vote(gate, MALLORY, REJECT)) is RefusalReason.NOT_ELIGIBLE
        assert gate.status is GateStatus.PENDING

    def test_member_of_a_group_not_in_the_policy_is_not_eligible(self):
        gate = open_gate()  # qa only
        assert refusal(vote(gate, CAROL)) is RefusalReason.NOT_ELIGIBLE

    def test_refused_votes_never_count(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        vote(gate, ALICE)
        vote(gate, MALLORY)
        assert gate.status is GateStatus.PENDING


class TestSelfApproval:
    POLICY = Policy.from_approvers(user_groups=["qa"], disallow_pipeline_executor=True)

    def test_executor_refused_when_disallowed(self):
        gate = open_gate(self.POLICY, pipeline_executor="alice")
        assert refusal(vote(gate, ALICE)) is RefusalReason.SELF_APPROVAL
        assert gate.status is GateStatus.PENDING

    def test_executor_refused_under_another_spelling(self):
        gate = open_gate(self.POLICY, pipeline_executor="Alice")
        assert refusal(vote(gate, Approver("alice "))) is RefusalReason.SELF_APPROVAL

    def test_executor_cannot_reject_either_when_disallowed(self):
        # DESIGN: decisions from the executor are refused; the pipeline can cancel its own run instead.
        gate = open_gate(self.POLICY, pipeline_executor="alice")
        assert refusal(vote(gate, ALICE, REJECT)) is RefusalReason.SELF_APPROVAL

    def test_self_approval_is_reported_even_for_an_unlisted_executor(self):
        gate = open_gate(self.POLICY, pipeline_executor="mallory")
        assert refusal(vote(gate, MALLORY)) is RefusalReason.SELF_APPROVAL

    def test_others_may_still_approve(self):
        gate = open_gate(self.POLICY, pipeline_executor="alice")
        assert kinds(vote(gate, BOB)) == ["VoteRecorded", "GateApproved"]

    def test_executor_allowed_when_flag_false(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"]), pipeline_executor="alice")
        assert kinds(vote(gate, ALICE)) == ["VoteRecorded", "GateApproved"]

    def test_unknown_executor_bans_nobody(self):
        gate = open_gate(self.POLICY, pipeline_executor=None)
        assert kinds(vote(gate, ALICE)) == ["VoteRecorded", "GateApproved"]


class TestToken:
    @pytest.mark.parametrize("token", ["old-token", "", None, TOKEN + "x", TOKEN.upper(), "tökén"])
    def test_wrong_or_missing_token_refused(self, token):
        gate = open_gate()
        assert refusal(vote(gate, ALICE, token=token)) is RefusalReason.STALE_TOKEN
        assert gate.status is GateStatus.PENDING
        assert gate.votes == ()

    def test_token_checked_before_eligibility(self):
        # A sender with a wrong token learns nothing about who is eligible.
        gate = open_gate()
        assert refusal(vote(gate, MALLORY, token="guess")) is RefusalReason.STALE_TOKEN


class TestVoteChange:
    def test_approve_then_reject_by_the_same_user_rejects(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        first = vote(gate, ALICE, decision_id="a1")
        events = vote(gate, ALICE, REJECT, decision_id="a2", comment="found a bug")
        assert kinds(events) == ["VoteRecorded", "GateRejected"]
        assert events[0].replaced_decision_id == first[0].decision_id
        assert events[1].rejected_by == ALICE
        assert events[1].comment == "found a bug"
        assert gate.status is GateStatus.REJECTED

    def test_approve_again_with_new_inputs_replaces_the_earlier_vote(self):
        from signoff.kernel import ApproverInput

        gate = open_gate(
            Policy.from_approvers(user_groups=["qa"], minimum_count=2),
            inputs=(ApproverInput("window", default_value="now"),),
        )
        vote(gate, ALICE, inputs={"window": "tonight"}, decision_id="a1", comment="tonight please")
        changed = vote(gate, ALICE, inputs={"window": "weekend"}, decision_id="a2", comment="")
        assert changed[0].replaced_decision_id == "a1"
        assert [v.decision_id for v in gate.current_votes()] == ["a2"]
        assert [v.decision_id for v in gate.votes] == ["a1", "a2"]  # history kept for the audit trail
        assert gate.final_inputs() == {"window": "weekend"}
        approved = vote(gate, BOB)
        assert approved[-1].inputs == {"window": "weekend"}
        assert approved[-1].comments == ()  # alice's replaced comment went with her replaced vote

    def test_changing_a_vote_does_not_add_a_second_approval(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        for _ in range(5):
            vote(gate, ALICE)
        assert gate.status is GateStatus.PENDING
        assert gate.progress()[0].approved_by == ("alice",)


class TestRejection:
    def test_any_eligible_rejection_rejects_at_once(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        vote(gate, ALICE, comment="fine by me", at=AT)
        events = vote(gate, BOB, REJECT, comment="not today", at=AT + timedelta(seconds=1))
        assert events[1] == GateRejected(
            gate_key=KEY,
            at=AT + timedelta(seconds=1),
            cause=OutcomeCause.VOTES,
            rejected_by=BOB,
            comment="not today",
            comments=(
                Comment("alice", APPROVE, "fine by me", AT),
                Comment("bob", REJECT, "not today", AT + timedelta(seconds=1)),
            ),
        )

    def test_one_rejection_beats_a_satisfied_rule(self):
        policy = Policy(rules=(ApprovalRule(user_groups=("qa",)), ApprovalRule(user_groups=("sre",), minimum_count=2)))
        gate = open_gate(policy)
        vote(gate, ALICE)
        vote(gate, CAROL)
        assert kinds(vote(gate, ERIN, REJECT)) == ["VoteRecorded", "GateRejected"]

    def test_rejection_ignores_and_drops_inputs(self):
        gate = open_gate()
        events = vote(gate, ALICE, REJECT, inputs={"nonsense": "x"})
        assert kinds(events) == ["VoteRecorded", "GateRejected"]
        assert events[0].inputs == {}
        assert gate.votes[0].inputs == {}


class TestClosedGate:
    @pytest.mark.parametrize("status", [APPROVE, REJECT])
    def test_decisions_after_approval_are_refused(self, status):
        gate = open_gate()
        vote(gate, ALICE)
        events = vote(gate, BOB, status)
        assert refusal(events) is RefusalReason.GATE_CLOSED
        assert events[-1].detail == "gate is approved"
        assert gate.status is GateStatus.APPROVED

    def test_decisions_after_rejection_are_refused(self):
        gate = open_gate()
        vote(gate, ALICE, REJECT)
        assert refusal(vote(gate, BOB)) is RefusalReason.GATE_CLOSED
        assert gate.status is GateStatus.REJECTED

    def test_decisions_after_cancel_are_refused(self):
        gate = open_gate()
        gate.cancel("aborted", AT)
        assert refusal(vote(gate, ALICE)) is RefusalReason.GATE_CLOSED

    def test_closed_is_reported_before_token_and_eligibility(self):
        gate = open_gate()
        vote(gate, ALICE)
        assert refusal(vote(gate, MALLORY, token="wrong")) is RefusalReason.GATE_CLOSED

    def test_closed_gate_records_nothing(self):
        gate = open_gate()
        vote(gate, ALICE)
        before = gate.votes
        vote(gate, BOB, REJECT)
        assert gate.votes == before


class TestDuplicate:
    def test_a_replayed_decision_id_is_a_duplicate_not_a_second_vote(self):
        gate = open_gate(Policy.from_approvers(user_groups=["qa"], minimum_count=2))
        vote(gate, ALICE, decision_id="same")
        events = vote(gate, BOB, decision_id="same")
        assert refusal(events) is RefusalReason.DUPLICATE
        assert gate.status is GateStatus.PENDING

    def test_replaying_the_closing_decision_says_duplicate_not_closed(self):
        gate = open_gate()
        vote(gate, ALICE, decision_id="final")
        assert refusal(vote(gate, ALICE, decision_id="final")) is RefusalReason.DUPLICATE

    def test_a_refused_decision_id_is_not_remembered(self):
        # Refusals are the service's audit trail to dedupe; the aggregate only holds accepted votes.
        gate = open_gate()
        vote(gate, ALICE, token="wrong", decision_id="retry")
        assert kinds(vote(gate, ALICE, decision_id="retry")) == ["VoteRecorded", "GateApproved"]


class TestMalformedCalls:
    def test_naive_time(self):
        with pytest.raises(InvalidDefinition):
            vote(open_gate(), ALICE, at=T0.replace(tzinfo=None))

    def test_unknown_status(self):
        with pytest.raises(ValueError, match="maybe"):
            vote(open_gate(), ALICE, "maybe")

    def test_status_as_its_string_value(self):
        gate = open_gate()
        assert kinds(vote(gate, ALICE, "reject")) == ["VoteRecorded", "GateRejected"]

    def test_approver_must_be_an_approver(self):
        with pytest.raises(InvalidDefinition):
            vote(open_gate(), "alice")

    def test_decision_id_required(self):
        gate = open_gate()
        with pytest.raises(InvalidDefinition):
            gate.decide(decision_id="", approver=ALICE, status=APPROVE, token=TOKEN, at=AT, source="cli")


def test_refusal_order_with_every_problem_at_once():
    """duplicate > gate_closed > stale_token > self_approval > not_eligible > invalid_inputs."""
    from signoff.kernel import ApproverInput

    policy = Policy.from_approvers(user_groups=["qa"], disallow_pipeline_executor=True)
    gate = open_gate(policy, pipeline_executor="mallory", inputs=(ApproverInput("x", allowed_values=("1",)),))
    assert refusal(vote(gate, MALLORY, token="bad", inputs={"x": "2"})) is RefusalReason.STALE_TOKEN
    assert refusal(vote(gate, MALLORY, inputs={"x": "2"})) is RefusalReason.SELF_APPROVAL
    assert refusal(vote(gate, DAVE, inputs={"x": "2"})) is RefusalReason.NOT_ELIGIBLE
    assert refusal(vote(gate, ALICE, inputs={"x": "2"})) is RefusalReason.INVALID_INPUTS
