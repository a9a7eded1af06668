"""The approval service's handler through the real ConsumerLoop, broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from signoff import contracts as wire
from signoff.approval.expiry import expire_due
from signoff.approval.repository import SCHEMA
from tests.integration.approval.conftest import START, ApprovalHarness, decision, request

pytestmark = pytest.mark.integration

OPENED = wire.GateOpened.event_type
VOTE = wire.VoteRecorded.event_type
APPROVED = wire.GateApproved.event_type
REJECTED = wire.GateRejected.event_type
EXPIRED = wire.GateExpired.event_type
CANCELLED = wire.GateCancelled.event_type
REFUSED = wire.DecisionRefused.event_type
REQUEST_REFUSED = wire.RequestRefused.event_type


async def refused(approval: ApprovalHarness, made: wire.ApprovalDecision) -> wire.DecisionRefused:
    await approval.send(made)
    (found,) = await approval.wait_for(REFUSED, where=lambda d: d.decision_id == made.decision_id)
    return found


async def test_request_opens_a_gate_with_token_and_eligible_approvers(approval: ApprovalHarness) -> None:
    req = request(groups=("sre",), users=("erin",), disallow_executor=True, executor="alice")
    opened = await approval.open_gate(req)
    assert opened.token and opened.gate_id
    assert opened.opened_at == approval.clock.now()
    assert opened.expires_at == approval.clock.now() + timedelta(hours=1)
    approvers = {a.user: a for a in opened.eligible_approvers}
    assert set(approvers) == {"bob", "carol", "dave", "erin"}  # alice ran the pipeline and is disallowed
    assert approvers["bob"].email == "bob@example.com" and approvers["bob"].slack == "U-bob"
    assert approvers["bob"].groups == ["sre"]
    assert await approval.gate_status(opened.gate_id) == "pending"


async def test_repeated_request_is_the_same_gate(approval: ApprovalHarness) -> None:
    req = request()
    opened = await approval.open_gate(req)
    await approval.send(req)  # a new event id, same natural key
    other = request()
    await approval.open_gate(other)  # processed after the repeat (same partition): the repeat was handled
    gates = [d for d in (e.data for e in await approval.published(OPENED)) if d.key == req.key]
    assert [g.gate_id for g in gates] == [opened.gate_id]


async def test_quorum_of_two(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(minimum_count=2))
    first = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    await approval.send(first)
    (vote,) = await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == first.decision_id)
    assert vote.approved_by == ["bob"]
    assert vote.vote.approver_email == "bob@example.com"  # the gate's directory snapshot lists it
    assert await approval.gate_status(opened.gate_id) == "pending"
    await approval.send(decision(approver="carol", token=opened.token, gate_id=opened.gate_id, comment="ok"))
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert approved.cause == "approvers"
    assert {(v.approver, v.approver_email) for v in approved.votes} == {
        ("bob", "bob@example.com"),
        ("carol", "carol@example.com"),
    }
    assert await approval.gate_status(opened.gate_id) == "approved"


async def test_self_approval_refused(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(executor="alice", disallow_executor=True))
    found = await refused(approval, decision(approver="alice", token=opened.token, gate_id=opened.gate_id))
    assert found.reason == "self_approval" and found.gate_id == opened.gate_id
    assert await approval.gate_status(opened.gate_id) == "pending"


async def test_non_member_refused(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request())
    found = await refused(approval, decision(approver="mallory", token=opened.token, gate_id=opened.gate_id))
    assert found.reason == "not_eligible"


async def test_stale_token_refused(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request())
    found = await refused(approval, decision(approver="bob", token="old-token", gate_id=opened.gate_id))
    assert found.reason == "stale_token"


async def test_forged_unsigned_and_unknown_source_refused(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request())
    forged = await refused(approval, decision(approver="bob", token=opened.token, gate_id=opened.gate_id, key=b"x"))
    assert forged.reason == "bad_signature"
    unsigned = await refused(approval, decision(approver="bob", token=opened.token, gate_id=opened.gate_id, key=None))
    assert unsigned.reason == "unsigned"
    unknown = await refused(
        approval, decision(approver="bob", token=opened.token, gate_id=opened.gate_id, source="slack")
    )
    assert unknown.reason == "unknown_source"
    assert await approval.gate_status(opened.gate_id) == "pending"
    async with approval.pool.acquire() as conn:
        reasons = await conn.fetch("SELECT reason FROM approval.audit WHERE kind = 'refused' ORDER BY seq")
    assert [r["reason"] for r in reasons] == ["bad_signature", "unsigned", "unknown_source"]


async def test_replayed_decision_id_is_a_duplicate(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(minimum_count=2))
    first = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    await approval.send(first)
    await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == first.decision_id)
    replay = decision(approver="carol", token=opened.token, gate_id=opened.gate_id, decision_id=first.decision_id)
    found = await refused(approval, replay)
    assert found.reason == "duplicate" and found.gate_id == opened.gate_id
    assert len(await approval.published(VOTE)) == 1
    assert await approval.gate_status(opened.gate_id) == "pending"


async def test_any_reject_rejects(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(minimum_count=2))
    await approval.send(decision(approver="bob", token=opened.token, gate_id=opened.gate_id))
    await approval.send(
        decision(approver="carol", token=opened.token, gate_id=opened.gate_id, status="Rejected", comment="no")
    )
    (rejected,) = await approval.wait_for(REJECTED, where=lambda d: d.gate_id == opened.gate_id)
    assert rejected.cause == "approver" and rejected.rejected_by == "carol" and rejected.comment == "no"
    late = await refused(approval, decision(approver="dave", token=opened.token, gate_id=opened.gate_id))
    assert late.reason == "gate_closed"


async def test_cancel(approval: ApprovalHarness) -> None:
    req = request()
    opened = await approval.open_gate(req)
    await approval.send(wire.ApprovalCancelRequested(key=req.key, reason="aborted", requested_at=approval.clock.now()))
    (cancelled,) = await approval.wait_for(CANCELLED, where=lambda d: d.gate_id == opened.gate_id)
    assert cancelled.reason == "aborted"
    assert await approval.gate_status(opened.gate_id) == "cancelled"
    async with approval.pool.acquire() as conn:
        audited = await conn.fetchrow(
            "SELECT detail FROM approval.audit WHERE gate_id = $1 AND kind = 'cancel'", opened.gate_id
        )
    assert audited["detail"]["detail"] == "aborted"  # the trail says why


async def test_timeout_fail_and_auto_approve_via_expiry(approval: ApprovalHarness) -> None:
    failing = await approval.open_gate(request(timeout="1h", timeout_action="fail"))
    approving = await approval.open_gate(request(timeout="2h", timeout_action="approve"))
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 0
    approval.clock.advance(timedelta(hours=1))
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 1
    (expired,) = await approval.wait_for(EXPIRED, where=lambda d: d.gate_id == failing.gate_id)
    assert expired.expired_at == approval.clock.now()
    approval.clock.advance(timedelta(hours=1))
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 1
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == approving.gate_id)
    assert approved.cause == "timeout_action"
    assert await approval.gate_status(failing.gate_id) == "expired"
    assert await approval.gate_status(approving.gate_id) == "approved"
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 0


async def test_codepipeline_decision_by_pipeline_stage_action(approval: ApprovalHarness) -> None:
    req = request(pipeline="cp_pipe", stage="prod", step="manual")
    opened = await approval.open_gate(req)
    doc = {
        "pipelineName": "cp_pipe",
        "stageName": "prod",
        "actionName": "manual",
        "token": opened.token,
        "result": {"status": "Approved", "summary": "ship it"},
    }
    made = wire.ApprovalDecision.from_codepipeline(doc, approver="bob", source="cli", decided_at=approval.clock.now())
    await approval.send(made.signed(b"cli-secret"))
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert approved.votes[0].comment == "ship it"


async def test_decision_for_unknown_gate_refused(approval: ApprovalHarness) -> None:
    found = await refused(approval, decision(approver="bob", token="t", gate_id="no-such-gate"))
    assert found.reason == "unknown_gate" and found.gate_id is None
    by_name = await refused(
        approval,
        decision(approver="bob", token="t", pipeline_name="nope", stage_name="s", action_name="a"),
    )
    assert by_name.reason == "unknown_gate"


async def test_auto_reject_previous_approvals_supersedes_older_gates_once_approved(approval: ApprovalHarness) -> None:
    """Harness's "auto-reject previous deployments paused in this step on approval": opening a newer gate rejects
    nothing; approving it rejects the older pending ones of its step, not a newer one."""
    pipeline_id = f"super_{uuid.uuid4().hex[:8]}"
    older = await approval.open_gate(request(pipeline=pipeline_id, auto_reject_previous=True))
    approval.clock.advance(timedelta(minutes=1))
    middle = await approval.open_gate(request(pipeline=pipeline_id, auto_reject_previous=True))
    approval.clock.advance(timedelta(minutes=1))
    newest = await approval.open_gate(request(pipeline=pipeline_id, auto_reject_previous=True))
    assert [await approval.gate_status(g.gate_id) for g in (older, middle, newest)] == ["pending"] * 3

    await approval.send(decision(approver="bob", token=middle.token, gate_id=middle.gate_id))
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == middle.gate_id)
    (rejected,) = await approval.wait_for(REJECTED, where=lambda d: d.gate_id == older.gate_id)
    assert rejected.cause == "superseded" and rejected.superseded_by == middle.gate_id
    assert await approval.gate_status(newest.gate_id) == "pending"


async def test_a_gate_approved_by_its_timeout_action_supersedes_older_gates_too(approval: ApprovalHarness) -> None:
    pipeline_id = f"super_{uuid.uuid4().hex[:8]}"
    older = await approval.open_gate(request(pipeline=pipeline_id, auto_reject_previous=True, timeout="1d"))
    approval.clock.advance(timedelta(minutes=1))
    newer = await approval.open_gate(
        request(pipeline=pipeline_id, auto_reject_previous=True, timeout="5m", timeout_action="approve")
    )
    approval.clock.advance(timedelta(minutes=5))
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 1
    assert await approval.gate_status(newer.gate_id) == "approved"
    (rejected,) = await approval.wait_for(REJECTED, where=lambda d: d.gate_id == older.gate_id)
    assert rejected.cause == "superseded" and rejected.superseded_by == newer.gate_id


async def test_the_same_decision_event_redelivered_counts_once(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(minimum_count=2))
    made = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    first = await approval.send(made)
    await approval.send(made, event_id=first.id)  # the same CloudEvent again: the inbox skips it
    await approval.send(decision(approver="carol", token=opened.token, gate_id=opened.gate_id))
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert len(await approval.published(VOTE)) == 2
    assert await approval.published(REFUSED) == []


async def test_votes_refusals_and_outcomes_are_audited(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request())
    await refused(approval, decision(approver="mallory", token=opened.token, gate_id=opened.gate_id))
    await approval.send(decision(approver="bob", token=opened.token, gate_id=opened.gate_id))
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    async with approval.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT kind, actor, reason FROM approval.audit WHERE gate_id = $1 ORDER BY seq", opened.gate_id
        )
        votes = await conn.fetch(
            "SELECT approver, status, source FROM approval.votes WHERE gate_id = $1", opened.gate_id
        )
    assert [(r["kind"], r["actor"], r["reason"]) for r in rows] == [
        ("requested", None, None),
        ("refused", "mallory", "not_eligible"),
        ("vote", "bob", None),
        ("outcome", None, None),
    ]
    assert [(v["approver"], v["status"], v["source"]) for v in votes] == [("bob", "approve", "cli")]


async def test_a_request_nobody_can_serve_is_refused_by_field_and_audited(approval: ApprovalHarness) -> None:
    auto = request(timeout_action="approve")
    auto = auto.model_copy(update={"approver_inputs": [wire.ApproverInput(name="ticket", required=True)]})
    typo = request(groups=("dosc",))
    quorum = request(minimum_count=5)  # sre has 4 members
    twice = request(groups=(), users=("Bob", "bob"), minimum_count=2)
    too_long = request(timeout="31d")  # the harness allows 30d
    # 400 unknown groups: the reason listing them all would not fit the refusal (it was dead-lettered instead).
    many = request(groups=tuple(f"no-such-group-{n:03}" for n in range(400)))
    good = request()
    for each in (auto, typo, quorum, twice, too_long, many, good):
        await approval.send(each)
    await approval.open_gate(good)
    found = await approval.wait_for(REQUEST_REFUSED, 6)
    by_key = {refusal.key: refusal.reasons for refusal in found}
    assert by_key == {
        auto.key: {"approver_inputs": "timeout action 'approve' needs a default for required input(s): ticket"},
        typo.key: {
            "policy.user_groups": "unknown user group 'dosc'",
            "policy.minimum_count": "1 approvals needed but only 0 eligible people",
        },
        quorum.key: {"policy.minimum_count": "5 approvals needed but only 4 eligible people"},
        twice.key: {
            "policy.users": "'Bob' and 'bob' are the same user",
            "policy.minimum_count": "2 approvals needed but only 1 eligible person",
        },
        too_long.key: {"timeout": "31d is over the maximum of 30d"},
        many.key: {
            "policy.user_groups": "unknown user groups "
            + ", ".join(f"'no-such-group-{n:03}'" for n in range(20))
            + ", and 380 more",
            "policy.minimum_count": "1 approvals needed but only 0 eligible people",
        },
    }
    assert all(refusal.triggered_by == good.triggered_by for refusal in found)
    assert [d.key for d in (e.data for e in await approval.published(OPENED))] == [good.key]
    async with approval.pool.acquire() as conn:
        audited = await conn.fetch("SELECT detail FROM approval.audit WHERE kind = 'request_refused'")
    refused = (auto, typo, quorum, twice, too_long, many)
    assert {row["detail"]["key"] for row in audited} == {r.key.as_path() for r in refused}


async def test_a_request_without_a_timeout_gets_the_configured_default(settings, names, database_url) -> None:
    harness = ApprovalHarness(settings, names, database_url)
    harness.settings = harness.settings.model_copy(update={"default_timeout": "3h"})
    await harness.start()
    try:
        await harness.directory({"sre": ["bob"]})
        untimed = request().model_copy(update={"timeout": None})
        opened = await harness.open_gate(untimed)
        assert opened.expires_at == harness.clock.now() + timedelta(hours=3)
    finally:
        await harness.stop()


async def test_and_rules_need_one_of_qa_and_two_of_sre(approval: ApprovalHarness) -> None:
    policy = wire.ApprovalPolicy(
        rules=[
            wire.ApprovalRule(user_groups=["qa"], minimum_count=1),
            wire.ApprovalRule(user_groups=["sre"], minimum_count=2),
        ]
    )
    opened = await approval.open_gate(request().model_copy(update={"policy": policy}))
    for approver in ("bob", "carol"):  # two of sre: the qa rule still fails
        made = decision(approver=approver, token=opened.token, gate_id=opened.gate_id)
        await approval.send(made)
        await approval.wait_for(VOTE, where=lambda d, m=made: d.vote.decision_id == m.decision_id)
    assert await approval.gate_status(opened.gate_id) == "pending"
    await approval.send(decision(approver="erin", token=opened.token, gate_id=opened.gate_id))
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert {v.approver for v in approved.votes} == {"bob", "carol", "erin"}


async def test_a_changed_vote_replaces_the_earlier_one(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request(minimum_count=2))
    first = decision(approver="bob", token=opened.token, gate_id=opened.gate_id, comment="first look")
    await approval.send(first)
    await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == first.decision_id)
    again = decision(approver="bob", token=opened.token, gate_id=opened.gate_id, comment="second look")
    await approval.send(again)
    (changed,) = await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == again.decision_id)
    assert changed.replaced_earlier_vote and changed.approved_by == ["bob"]  # still one approver, not two
    assert await approval.gate_status(opened.gate_id) == "pending"


async def test_inputs_defaults_required_and_allowed_values(approval: ApprovalHarness) -> None:
    inputs = [
        wire.ApproverInput(name="foo", default_value="bar"),
        wire.ApproverInput(name="ticket", required=True),
        wire.ApproverInput(name="region", allowed_values=["eu", "us"], default_value="eu"),
    ]
    opened = await approval.open_gate(request().model_copy(update={"approver_inputs": inputs}))
    missing = await refused(approval, decision(approver="bob", token=opened.token, gate_id=opened.gate_id))
    assert missing.reason == "invalid_inputs"
    not_allowed = await refused(
        approval,
        decision(
            approver="bob", token=opened.token, gate_id=opened.gate_id, inputs={"ticket": "T-1", "region": "mars"}
        ),
    )
    assert not_allowed.reason == "invalid_inputs"
    await approval.send(
        decision(approver="bob", token=opened.token, gate_id=opened.gate_id, inputs={"ticket": "T-1", "region": "us"})
    )
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert approved.inputs == {"foo": "bar", "ticket": "T-1", "region": "us"}


async def test_a_refused_decision_replayed_later_is_a_duplicate_not_a_vote(approval: ApprovalHarness) -> None:
    """An `invalid_inputs` refusal re-sent after another approver supplied the input must not count."""
    inputs = [wire.ApproverInput(name="ticket", required=True)]
    opened = await approval.open_gate(request(minimum_count=2).model_copy(update={"approver_inputs": inputs}))
    first = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    assert (await refused(approval, first)).reason == "invalid_inputs"
    carol = decision(approver="carol", token=opened.token, gate_id=opened.gate_id, inputs={"ticket": "T-1"})
    await approval.send(carol)
    await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == carol.decision_id)
    await approval.send(first)  # the same signed decision, a new event
    (_, replayed) = await approval.wait_for(REFUSED, 2, where=lambda d: d.decision_id == first.decision_id)
    assert replayed.reason == "duplicate" and replayed.gate_id == opened.gate_id
    assert await approval.gate_status(opened.gate_id) == "pending"
    assert [d.vote.approver for d in (e.data for e in await approval.published(VOTE))] == ["carol"]


async def test_a_decision_decided_too_long_before_or_after_its_arrival_is_stale(approval: ApprovalHarness) -> None:
    opened = await approval.open_gate(request())
    approval.clock.advance(timedelta(minutes=10, seconds=1))  # decisions are stamped START; default max age 10m
    late = await refused(approval, decision(approver="bob", token=opened.token, gate_id=opened.gate_id))
    assert late.reason == "stale_decision" and late.gate_id == opened.gate_id
    assert "more than 10m" in late.detail
    early = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    early = early.model_copy(update={"decided_at": approval.clock.now() + timedelta(minutes=11)}).signed(b"cli-secret")
    assert (await refused(approval, early)).reason == "stale_decision"
    fresh = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    fresh = fresh.model_copy(update={"decided_at": approval.clock.now() - timedelta(minutes=9)}).signed(b"cli-secret")
    await approval.send(fresh)
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)


async def test_a_decision_rebuilds_the_gate_without_its_request_document(approval: ApprovalHarness) -> None:
    """A decision is judged on the gate's own columns and votes: the request document is not read on that path (a
    stored document that no longer validates changes nothing), and each vote keeps its source and the sender's
    time, published with the outcome."""
    opened = await approval.open_gate(request(minimum_count=2))
    async with approval.pool.acquire() as conn:
        await conn.execute(f"""UPDATE "{SCHEMA}".gates SET request = '{{}}' WHERE id = $1""", opened.gate_id)  # noqa: S608
    first = decision(approver="bob", token=opened.token, gate_id=opened.gate_id)
    await approval.send(first)
    await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == first.decision_id)
    await approval.send(decision(approver="carol", token=opened.token, gate_id=opened.gate_id))
    (approved,) = await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)
    assert [(v.approver, v.source, v.decided_at) for v in approved.votes] == [
        ("bob", "cli", START),
        ("carol", "cli", START),
    ]
    assert approved.key == opened.key


async def test_a_request_the_service_fails_on_is_dead_lettered_and_refused_so_its_pipeline_does_not_wait(
    approval: ApprovalHarness,
) -> None:
    # Valid by the contract, refused by the database (an attempt over PostgreSQL's integer): `apply` fails on it
    # every time. It is dead-lettered, and the pipeline hears why instead of waiting for a gate that never opens.
    failing = request()
    failing = failing.model_copy(update={"key": failing.key.model_copy(update={"attempt": 2**31})})
    good = request()
    await approval.send(failing)
    await approval.send(good)
    await approval.open_gate(good)  # the loop goes on
    (refused,) = await approval.wait_for(REQUEST_REFUSED, where=lambda data: data.key == failing.key)
    assert set(refused.reasons) == {"request"}
    assert refused.reasons["request"].startswith("the approval service could not process it (")
    assert refused.reasons["request"].endswith("); it is on the dead-letter topic")
    assert refused.triggered_by == failing.triggered_by
    async with approval.pool.acquire() as conn:
        dead = await conn.fetchval(
            "SELECT count(*) FROM approval.outbox WHERE aggregatetype = $1", approval.dead_letters
        )
        audited = await conn.fetchval(
            "SELECT count(*) FROM approval.audit WHERE kind = 'request_refused' AND detail->>'key' = $1",
            failing.key.as_path(),
        )
    assert (dead, audited) == (1, 1)
