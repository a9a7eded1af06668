"""Timeouts (driven by a FixedClock), cancellation and superseding; nothing changes after a final state."""

from datetime import timedelta

import pytest

from signoff.approval.domain import (
    Comment,
    GateApproved,
    GateCancelled,
    GateExpired,
    GateRejected,
    OutcomeCause,
    RefusalReason,
)
from signoff.kernel import ApproverInput, DecisionStatus, GateKey, GateStatus, InvalidDefinition, Policy, TimeoutAction
from signoff.runtime.clock import FixedClock
from tests.unit.approval.builders import ALICE, BOB, KEY, T0, TOKEN, kinds, open_gate, vote

HOUR = timedelta(hours=1)
QUORUM_2 = Policy.from_approvers(user_groups=["qa"], minimum_count=2)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


class TestTimeout:
    def test_not_yet_due(self, clock):
        gate = open_gate(timeout=HOUR)
        clock.advance(HOUR - timedelta(microseconds=1))
        assert not gate.is_due(clock.now())
        assert gate.expire(clock.now()) == []
        assert gate.status is GateStatus.PENDING

    def test_fail_expires_exactly_at_the_deadline(self, clock):
        gate = open_gate(timeout=HOUR)
        now = clock.advance(HOUR)
        assert gate.expire(now) == [GateExpired(gate_key=KEY, at=now, expires_at=T0 + HOUR)]
        assert gate.status is GateStatus.EXPIRED
        assert gate.closed_at == now

    def test_late_sweep_reports_when_it_ran(self, clock):
        gate = open_gate(timeout=HOUR)
        now = clock.advance(3 * HOUR)
        [expired] = gate.expire(now)
        assert (expired.at, expired.expires_at) == (T0 + 3 * HOUR, T0 + HOUR)

    def test_auto_approve_with_defaults_and_votes_so_far(self, clock):
        gate = open_gate(
            QUORUM_2,
            inputs=(ApproverInput("w", default_value="now"), ApproverInput("note", default_value="-")),
            timeout_action=TimeoutAction.APPROVE,
        )
        vote(gate, ALICE, inputs={"note": "partial"}, comment="one of two", at=T0 + timedelta(minutes=1))
        now = clock.advance(HOUR)
        assert gate.expire(now) == [
            GateApproved(
                gate_key=KEY,
                at=now,
                cause=OutcomeCause.TIMEOUT,
                inputs={"w": "now", "note": "partial"},
                approvers=(ALICE,),
                comments=(Comment("alice", DecisionStatus.APPROVE, "one of two", T0 + timedelta(minutes=1)),),
            )
        ]
        assert gate.status is GateStatus.APPROVED

    def test_auto_approve_without_votes(self, clock):
        gate = open_gate(inputs=(ApproverInput("w", default_value="now"),), timeout_action=TimeoutAction.APPROVE)
        [approved] = gate.expire(clock.advance(HOUR))
        assert (approved.inputs, approved.approvers, approved.cause) == ({"w": "now"}, (), OutcomeCause.TIMEOUT)

    def test_auto_reject(self, clock):
        gate = open_gate(timeout_action=TimeoutAction.REJECT)
        now = clock.advance(HOUR)
        assert gate.expire(now) == [GateRejected(gate_key=KEY, at=now, cause=OutcomeCause.TIMEOUT)]
        assert gate.status is GateStatus.REJECTED

    @pytest.mark.parametrize("action", list(TimeoutAction))
    def test_expire_twice_does_nothing_the_second_time(self, clock, action):
        gate = open_gate(timeout_action=action)
        now = clock.advance(HOUR)
        assert len(gate.expire(now)) == 1
        assert gate.expire(clock.advance(HOUR)) == []

    def test_a_decided_gate_never_expires(self, clock):
        gate = open_gate()
        vote(gate, ALICE)
        assert gate.expire(clock.advance(10 * HOUR)) == []
        assert gate.status is GateStatus.APPROVED

    def test_decision_after_the_deadline_finds_the_gate_expired(self, clock):
        gate = open_gate()
        events = vote(gate, ALICE, at=clock.advance(HOUR))
        assert kinds(events) == ["GateExpired", "DecisionRefused"]
        assert events[1].reason is RefusalReason.GATE_CLOSED
        assert events[1].detail == "gate is expired"
        assert gate.status is GateStatus.EXPIRED

    def test_decision_just_before_the_deadline_counts(self, clock):
        gate = open_gate()
        events = vote(gate, ALICE, at=clock.advance(HOUR - timedelta(microseconds=1)))
        assert kinds(events) == ["VoteRecorded", "GateApproved"]

    def test_deadline_in_another_timezone_is_the_same_instant(self):
        from datetime import timezone

        gate = open_gate()
        paris = timezone(timedelta(hours=1))
        assert gate.is_due((T0 + HOUR).astimezone(paris))
        assert not gate.is_due((T0 + HOUR - timedelta(seconds=1)).astimezone(paris))

    def test_naive_now_refused(self):
        with pytest.raises(InvalidDefinition):
            open_gate().expire(T0.replace(tzinfo=None))


class TestCancel:
    def test_cancel_pending(self, clock):
        gate = open_gate()
        now = clock.advance(timedelta(minutes=5))
        assert gate.cancel("execution aborted", now) == [
            GateCancelled(gate_key=KEY, at=now, reason="execution aborted")
        ]
        assert gate.status is GateStatus.CANCELLED
        assert gate.closed_at == now

    def test_cancel_is_idempotent(self, clock):
        gate = open_gate()
        gate.cancel("aborted", clock.now())
        assert gate.cancel("aborted", clock.advance(timedelta(minutes=1))) == []

    def test_cancel_after_approval_changes_nothing(self, clock):
        gate = open_gate()
        vote(gate, ALICE)
        assert gate.cancel("too late", clock.now()) == []
        assert gate.status is GateStatus.APPROVED

    def test_cancel_after_the_deadline_expires_instead(self, clock):
        gate = open_gate()
        events = gate.cancel("aborted", clock.advance(2 * HOUR))
        assert kinds(events) == ["GateExpired"]
        assert gate.status is GateStatus.EXPIRED


class TestSupersede:
    NEWER = GateKey(pipeline="shop", execution="exec-2", stage="prod", step="approve", attempt=1)

    def test_older_pending_gate_is_rejected_as_superseded(self, clock):
        gate = open_gate(QUORUM_2)
        vote(gate, ALICE, comment="half way", at=T0)
        now = clock.advance(timedelta(minutes=3))
        assert gate.supersede(self.NEWER, now) == [
            GateRejected(
                gate_key=KEY,
                at=now,
                cause=OutcomeCause.SUPERSEDED,
                superseded_by=self.NEWER,
                comments=(Comment("alice", DecisionStatus.APPROVE, "half way", T0),),
            )
        ]
        assert gate.status is GateStatus.REJECTED

    def test_a_final_gate_is_not_superseded(self, clock):
        gate = open_gate()
        vote(gate, ALICE)
        assert gate.supersede(self.NEWER, clock.now()) == []
        assert gate.status is GateStatus.APPROVED

    def test_votes_after_superseding_are_refused(self, clock):
        gate = open_gate()
        gate.supersede(self.NEWER, clock.now())
        assert vote(gate, BOB)[-1].reason is RefusalReason.GATE_CLOSED

    def test_a_retry_attempt_may_supersede(self, clock):
        retry = GateKey(pipeline="shop", execution="exec-1", stage="prod", step="approve", attempt=2)
        assert kinds(open_gate().supersede(retry, clock.now())) == ["GateRejected"]

    @pytest.mark.parametrize(
        "other",
        [
            KEY,
            GateKey(pipeline="shop", execution="exec-2", stage="prod", step="deploy", attempt=1),
            GateKey(pipeline="blog", execution="exec-2", stage="prod", step="approve", attempt=1),
        ],
    )
    def test_only_another_run_of_the_same_step_may_supersede(self, clock, other):
        with pytest.raises(InvalidDefinition):
            open_gate().supersede(other, clock.now())

    def test_superseding_after_the_deadline_expires_instead(self, clock):
        gate = open_gate()
        assert kinds(gate.supersede(self.NEWER, clock.advance(HOUR))) == ["GateExpired"]


@pytest.mark.parametrize("closing", ["approve", "reject", "expire", "cancel", "supersede"])
def test_nothing_changes_after_a_final_state(closing, clock):
    gate = open_gate(QUORUM_2)
    vote(gate, ALICE, at=T0)
    if closing == "approve":
        vote(gate, BOB, at=T0)
    elif closing == "reject":
        vote(gate, BOB, DecisionStatus.REJECT, at=T0)
    elif closing == "expire":
        gate.expire(T0 + HOUR)
    elif closing == "cancel":
        gate.cancel("x", T0)
    else:
        gate.supersede(TestSupersede.NEWER, T0)
    frozen = (gate.status, gate.closed_at, gate.votes, gate.final_inputs())

    later = T0 + 5 * HOUR
    assert [e.reason for e in vote(gate, BOB, at=later)] == [RefusalReason.GATE_CLOSED]
    assert [e.reason for e in vote(gate, ALICE, DecisionStatus.REJECT, at=later)] == [RefusalReason.GATE_CLOSED]
    assert gate.expire(later) == []
    assert gate.cancel("again", later) == []
    assert gate.supersede(TestSupersede.NEWER, later) == []
    assert (gate.status, gate.closed_at, gate.votes, gate.final_inputs()) == frozen


class TestCollectedEvents:
    """What the unit of work turns into outbox rows: every command's events, in order, handed out once."""

    def test_every_command_keeps_its_events_until_collected(self, clock):
        gate = open_gate(QUORUM_2, timeout=HOUR)
        assert kinds(gate.collect_events()) == ["GateOpened"]
        first = vote(gate, ALICE)
        refused = vote(gate, ALICE, decision_id=first[0].decision_id)  # the same decision again: a duplicate
        second = vote(gate, BOB)
        assert gate.collect_events() == [*first, *refused, *second]
        assert kinds(first + refused + second) == ["VoteRecorded", "DecisionRefused", "VoteRecorded", "GateApproved"]
        assert gate.collect_events() == []

    def test_a_timeout_applied_by_another_command_is_collected_once(self, clock):
        gate = open_gate(timeout=HOUR)
        gate.collect_events()
        events = gate.cancel("aborted", T0 + HOUR)
        assert kinds(events) == ["GateExpired"]
        assert gate.collect_events() == events

    def test_a_vote_keeps_its_source_and_the_senders_time(self, clock):
        gate = open_gate()
        sent = T0 - timedelta(seconds=5)
        (recorded, _) = gate.decide(
            decision_id="d-src",
            approver=ALICE,
            status=DecisionStatus.APPROVE,
            token=TOKEN,
            at=T0 + timedelta(minutes=1),
            source="slack",
            decided_at=sent,
        )
        stored = gate.vote(recorded.decision_id)
        assert stored is not None and (stored.source, stored.decided_at, stored.at) == (
            "slack",
            sent,
            T0 + timedelta(minutes=1),
        )
