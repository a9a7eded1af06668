"""Decisions never queue behind requests: the approval role consumes them on a loop of their own (own consumer
group, own transactions), so a decision is applied while a batch of requests is still being absorbed."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest

from signoff import contracts as wire
from signoff.approval.repository import SCHEMA
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.runtime.clock import FixedClock
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Lane, Service
from tests.integration.approval.conftest import KEY, START, decision, request
from tests.support.topics import read_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VOTE = wire.VoteRecorded.event_type


class HoldsRequests:
    """The real handler, except that once armed, a batch with a request waits until released: a burst of requests
    the role is in the middle of absorbing, for as long as the test needs."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.armed = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def apply(self, uow, batch) -> None:
        if self.armed and any(isinstance(r.event.data, wire.ApprovalRequested) for r in batch):
            self.holding.set()
            await self.release.wait()
        await self.inner.apply(uow, batch)


async def test_a_decision_is_applied_while_a_batch_of_requests_is_still_in_flight(settings, names, tmp_path: Path):
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  sre:\n    - bob\n")
    role_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"cli": KEY.decode()}, "directory_file": directory}
    )
    requests_topic = names.topic("signoff.approval.requests")
    decisions_topic = names.topic("signoff.approval.decisions")
    spec = approval_spec(role_settings, FixedClock(START))
    real_handler = spec.handler
    holder: list[HoldsRequests] = []

    def handler(context):
        holder.append(HoldsRequests(real_handler(context)))
        return holder[0]

    spec = dataclasses.replace(
        spec,
        handler=handler,
        group_id=names.group("signoff-approval"),
        consumes=(requests_topic,),
        lanes=(Lane("decisions", (decisions_topic,)),),
    )
    service = Service(spec, role_settings)
    producer = make_producer(role_settings, "test-producer")
    await service.start()
    await producer.start()
    [held] = holder
    try:

        async def send(data: wire.EventData, topic: str) -> None:
            event = wire.new_event(data, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)

        async def gate(pipeline: str):
            async with service.pool.acquire() as conn:
                return await conn.fetchrow(
                    "SELECT id, token, status FROM approval.gates WHERE pipeline_id = $1", pipeline
                )

        first, second = f"lane_{uuid.uuid4().hex[:8]}", f"lane_{uuid.uuid4().hex[:8]}"
        await send(request(pipeline=first), requests_topic)
        opened = await eventually(lambda: gate(first), what="the first gate open")

        held.armed = True
        await send(request(pipeline=second), requests_topic)
        await asyncio.wait_for(held.holding.wait(), 30)  # the requests loop is now in the middle of a batch

        await send(decision(approver="bob", token=opened["token"], gate_id=opened["id"]), decisions_topic)

        async def approved():
            row = await gate(first)
            return row["status"] == "approved"

        await eventually(approved, what="the decision applied while the requests batch is held")
        assert await gate(second) is None  # that batch has indeed not committed yet

        held.release.set()
        await eventually(lambda: gate(second), what="the held request applied once released")
    finally:
        held.release.set()
        await producer.stop()
        await service.stop()


async def test_a_decisions_outcome_is_published_while_the_main_lanes_rows_wait(settings, names, tmp_path: Path):
    """The outbox has a lane per consumer lane: the GateApproved of a decision goes out while GateOpened rows of
    the requests loop are still unsent (here: their relay is held back, as a burst's backlog would hold them)."""
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  sre:\n    - bob\n")
    role_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"cli": KEY.decode()}, "directory_file": directory}
    )
    requests_topic = names.topic("signoff.approval.requests")
    decisions_topic = names.topic("signoff.approval.decisions")
    spec = dataclasses.replace(
        approval_spec(role_settings, FixedClock(START)),
        group_id=names.group("signoff-approval"),
        consumes=(requests_topic,),
        lanes=(Lane("decisions", (decisions_topic,)),),
    )
    service = Service(spec, role_settings)
    producer = make_producer(role_settings, "test-producer")
    await service.start()
    await producer.start()
    blocker = await service.pool.acquire()
    blocking = blocker.transaction()
    held = False
    try:

        async def send(data: wire.EventData, topic: str) -> None:
            event = wire.new_event(data, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)

        async def outbox(pipeline: str) -> dict[str, bool]:
            """event type -> sent, for the gate of `pipeline`."""
            async with service.pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT o.type, o.sent_at IS NOT NULL AS sent FROM approval.outbox o
                       JOIN approval.gates g ON o.key = convert_to(g.id, 'UTF8')
                       WHERE g.pipeline_id = $1 AND o.aggregatetype = $2""",
                    pipeline,
                    "signoff.approval.gates.v1",
                )
            return {row["type"]: row["sent"] for row in rows}

        async def gate(pipeline: str):
            async with service.pool.acquire() as conn:
                return await conn.fetchrow("SELECT id, token FROM approval.gates WHERE pipeline_id = $1", pipeline)

        decided, waiting = f"lane_{uuid.uuid4().hex[:8]}", f"lane_{uuid.uuid4().hex[:8]}"
        await send(request(pipeline=decided), requests_topic)
        opened = await eventually(lambda: gate(decided), what="the gate to decide open")
        await eventually(lambda: _all_sent(outbox(decided)), what="its GateOpened published")

        # The main lane's relay cannot take its lead now (the lock it takes per round, held by the test).
        await blocking.start()
        held = True
        await blocker.execute("SELECT pg_advisory_xact_lock(hashtext('signoff.outbox.approval'))")
        await send(request(pipeline=waiting), requests_topic)
        await eventually(lambda: gate(waiting), what="the second gate open (its GateOpened not published)")
        await send(decision(approver="bob", token=opened["token"], gate_id=opened["id"]), decisions_topic)

        async def approved_published() -> bool:
            return (await outbox(decided)).get("io.signoff.gate.approved.v1", False)

        await eventually(approved_published, what="the GateApproved published while the main lane waits")
        assert set((await outbox(waiting)).values()) == {False}

        await blocking.rollback()
        held = False
        await eventually(lambda: _all_sent(outbox(waiting)), what="the main lane published once free")
    finally:
        if held:
            await blocking.rollback()
        await service.pool.release(blocker)
        await producer.stop()
        await service.stop()


async def _all_sent(rows) -> bool:
    found = await rows
    return bool(found) and all(found.values())


async def test_a_batch_of_decisions_reads_its_gates_up_front_and_a_second_vote_on_one_sees_the_first(approval):
    """A batch of decisions locks and reads its gates up front (two statements); a gate decided twice in the batch
    is the same aggregate for the second decision (the unit of work's identity map), so the quorum of two is reached
    within the batch."""
    quorum = await approval.open_gate(request(minimum_count=2))
    single = await approval.open_gate(request())
    approval.loop.stop()  # the batch below is applied by hand, in one piece
    await asyncio.gather(approval.task, return_exceptions=True)
    for made in (
        decision(approver="bob", token=quorum.token, gate_id=quorum.gate_id),
        decision(approver="dave", token=single.token, gate_id=single.gate_id),
        decision(approver="carol", token=quorum.token, gate_id=quorum.gate_id),
    ):
        await approval.send(made)
    records = await _records(approval.settings, approval.decisions, 3)

    await approval.loop.process(records)

    assert await approval.gate_status(quorum.gate_id) == "approved"
    assert await approval.gate_status(single.gate_id) == "approved"
    approved = {e.data.gate_id: e.data for e in await approval.published(wire.GateApproved.event_type)}
    assert sorted(vote.approver for vote in approved[quorum.gate_id].votes) == ["bob", "carol"]


async def test_a_batch_of_decisions_written_set_based_keeps_replays_replaced_votes_and_order(approval):
    """A batch's decision ids, votes, audit rows and closures are written one statement per table: a replay of an
    id remembered by an earlier batch and one of an id first seen earlier in the same batch are duplicates, a vote
    changed within the batch is stored replaced, a forged decision's id is not remembered, and every event is
    published in the order of the decisions."""
    quorum = await approval.open_gate(request(minimum_count=3))
    single = await approval.open_gate(request())
    earlier = decision(approver="carol", token=quorum.token, gate_id=quorum.gate_id)
    await approval.send(earlier)
    await approval.wait_for(VOTE, where=lambda d: d.vote.decision_id == earlier.decision_id)
    approval.loop.stop()  # the batch below is applied by hand, in one piece
    await asyncio.gather(approval.task, return_exceptions=True)
    first = decision(approver="bob", token=quorum.token, gate_id=quorum.gate_id, comment="first look")
    changed = decision(approver="bob", token=quorum.token, gate_id=quorum.gate_id, comment="second look")
    forged = decision(approver="dave", token=single.token, gate_id=single.gate_id, key=b"not-the-key")
    batch = (
        first,
        decision(approver="carol", token=single.token, gate_id=single.gate_id, decision_id=earlier.decision_id),
        changed,
        decision(approver="dave", token=single.token, gate_id=single.gate_id, decision_id=first.decision_id),
        forged,
        decision(approver="dave", token=single.token, gate_id=single.gate_id),
    )
    order = {(await approval.send(made)).id: index for index, made in enumerate(batch)}
    before = len(await approval.published())
    records = await _records(approval.settings, approval.decisions, len(batch) + 1)
    # The topic has several partitions: the batch is put back in the order sent (`earlier`'s, applied, left out).
    ids = {id(record): wire.decode(record.value, list(record.headers)).id for record in records}
    records = sorted((r for r in records if ids[id(r)] in order), key=lambda r: order[ids[id(r)]])

    await approval.loop.process(records)

    published = [e.data for e in (await approval.published())[before:]]
    assert [(type(d).__name__, d.gate_id) for d in published] == [
        ("VoteRecorded", quorum.gate_id),
        ("DecisionRefused", quorum.gate_id),  # a replay of `earlier`, whose gate it names
        ("VoteRecorded", quorum.gate_id),
        ("DecisionRefused", quorum.gate_id),  # a replay of `first`, earlier in this batch
        ("DecisionRefused", None),  # forged
        ("VoteRecorded", single.gate_id),
        ("GateApproved", single.gate_id),
    ]
    assert [d.reason.value for d in published if isinstance(d, wire.DecisionRefused)] == [
        "duplicate",
        "duplicate",
        "bad_signature",
    ]
    assert published[2].replaced_earlier_vote
    assert await approval.gate_status(quorum.gate_id) == "pending"  # carol and bob (once): three needed
    assert await approval.gate_status(single.gate_id) == "approved"
    async with approval.pool.acquire() as conn:
        votes = await conn.fetch(f'SELECT decision_id, replaced FROM "{SCHEMA}".votes ORDER BY seq')  # noqa: S608
        seen = await conn.fetch(f'SELECT decision_id, gate_id FROM "{SCHEMA}".decisions_seen')  # noqa: S608
        audit = await conn.fetch(
            f"""SELECT kind, reason FROM "{SCHEMA}".audit WHERE kind <> 'requested' ORDER BY seq"""  # noqa: S608
        )
    assert [(v["decision_id"], v["replaced"]) for v in votes] == [
        (earlier.decision_id, False),
        (first.decision_id, True),
        (changed.decision_id, False),
        (batch[5].decision_id, False),
    ]
    assert {s["decision_id"]: s["gate_id"] for s in seen} == {
        earlier.decision_id: quorum.gate_id,
        first.decision_id: quorum.gate_id,
        changed.decision_id: quorum.gate_id,
        batch[5].decision_id: single.gate_id,
    }
    assert [(a["kind"], a["reason"]) for a in audit] == [
        ("vote", None),  # earlier's
        ("vote", None),
        ("refused", "duplicate"),
        ("vote", None),
        ("refused", "duplicate"),
        ("refused", "bad_signature"),
        ("vote", None),
        ("outcome", None),
    ]


async def _records(settings, topic: str, count: int) -> list:
    return await read_records(settings.kafka_bootstrap, topic, count)
