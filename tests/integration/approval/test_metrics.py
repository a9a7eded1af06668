"""The approval role's metrics, read from the process's Prometheus registry after real batches on the real broker and
PostgreSQL: what a journey counts, that a batch rolled back counts nothing, and the gauges counted in the database.

Counters are process-wide (other tests count too), so each test compares before and after, on a pipeline of its own.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from signoff import contracts as wire
from signoff.approval.expiry import expire_due
from signoff.approval.metrics import refresh_gate_gauges
from signoff.contracts.events import EnvironmentRef, EnvironmentType
from signoff.runtime.consumer import ConsumerLoop
from signoff.runtime.kafka import ensure_topics, make_consumer
from tests.integration.approval.conftest import ApprovalHarness, decision, request
from tests.support.topics import read_records

pytestmark = pytest.mark.integration

REFUSED = wire.DecisionRefused.event_type
APPROVED = wire.GateApproved.event_type


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts(pipeline: str) -> dict[str, float]:
    """The approval metrics this module's tests move (the wait histogram's of `pipeline` only)."""
    return {
        "opened": value("signoff_gates_opened_total"),
        "approved": value("signoff_gate_outcomes_total", outcome="approved"),
        "expired": value("signoff_gate_outcomes_total", outcome="expired"),
        "votes": value("signoff_decisions_total", status="approved", source="cli"),
        "not_eligible": value("signoff_decisions_refused_total", reason="not_eligible"),
        "unsigned": value("signoff_decisions_refused_total", reason="unsigned"),
        "waits": value(
            "signoff_gate_wait_seconds_count", outcome="approved", pipeline=pipeline, environment_type="production"
        ),
        "waits_under_15m": value(
            "signoff_gate_wait_seconds_bucket",
            outcome="approved",
            pipeline=pipeline,
            environment_type="production",
            le="900.0",
        ),
        "waits_under_5m": value(
            "signoff_gate_wait_seconds_bucket",
            outcome="approved",
            pipeline=pipeline,
            environment_type="production",
            le="300.0",
        ),
    }


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before if after[name] != before[name]}


def in_production(req: wire.ApprovalRequested) -> wire.ApprovalRequested:
    stage = req.current_stage.model_copy(
        update={"environments": [EnvironmentRef(ref="prod_eu", type=EnvironmentType.PRODUCTION)]}
    )
    return req.model_copy(update={"current_stage": stage})


async def test_a_journey_counts_the_gate_the_vote_the_refusals_and_the_wait(approval: ApprovalHarness) -> None:
    pipeline = f"metrics-{uuid.uuid4().hex[:8]}"
    before = counts(pipeline)
    opened = await approval.open_gate(in_production(request(pipeline=pipeline)))
    erin = decision(approver="erin", token=opened.token, gate_id=opened.gate_id)  # qa, not sre
    unsigned = decision(approver="bob", token=opened.token, gate_id=opened.gate_id, key=None)
    for refused in (erin, unsigned):
        await approval.send(refused)
        await approval.wait_for(REFUSED, where=lambda d, made=refused: d.decision_id == made.decision_id)
    approval.clock.advance(timedelta(minutes=10))
    await approval.send(decision(approver="bob", token=opened.token, gate_id=opened.gate_id))
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == opened.gate_id)

    assert moved(before, counts(pipeline)) == {
        "opened": 1,
        "not_eligible": 1,
        "unsigned": 1,
        "votes": 1,
        "approved": 1,
        "waits": 1,
        "waits_under_15m": 1,  # ten minutes: above the 5 minute bucket
    }


async def test_expired_gates_are_counted_by_the_expiry_loop(approval: ApprovalHarness) -> None:
    pipeline = f"metrics-{uuid.uuid4().hex[:8]}"
    await approval.open_gate(request(pipeline=pipeline, timeout="1h"))
    before = value("signoff_gate_outcomes_total", outcome="expired")
    approval.clock.advance(timedelta(hours=2))
    assert (
        await expire_due(approval.pool, approval.clock, links=approval.handler.links, repository=approval.repository)
        == 1
    )
    assert value("signoff_gate_outcomes_total", outcome="expired") - before == 1
    assert value("signoff_gate_wait_seconds_count", outcome="expired", pipeline=pipeline, environment_type="none") == 1


async def test_a_batch_rolled_back_counts_nothing_and_its_retry_counts_once(approval: ApprovalHarness, names) -> None:
    """One batch: a request and an event the service does not consume. The handler opens the gate, then raises on
    the other; the transaction rolls back and the loop applies the events one by one: one gate counted, not two."""
    topic = names.topic("signoff.approval.requests.rollback")
    await ensure_topics(approval.settings.model_copy(update={"kafka_topic_partitions": 1}), [topic])
    pipeline = f"metrics-{uuid.uuid4().hex[:8]}"
    unconsumed = wire.GateCancelled(
        gate_id="g-1", key=request(pipeline=pipeline).key, reason="test", cancelled_at=approval.clock.now()
    )
    for data in (request(pipeline=pipeline), unconsumed):
        value_, headers = wire.encode(wire.new_event(data, source="urn:signoff:test"))
        await approval.producer.send_and_wait(topic, value_, key=b"k", headers=headers)
    records = await fetch_all(approval, topic, 2)
    loop = ConsumerLoop(
        name=names.group("signoff-approval-rollback"),
        topics=[topic],
        consumer=make_consumer(approval.settings, [topic], "unused", "test-rollback"),
        pool=approval.pool,
        schema="approval",
        handler=approval.handler,
        dead_letter_topic=approval.dead_letters,
    )
    before = value("signoff_gates_opened_total")
    await loop.process(records)
    assert value("signoff_gates_opened_total") - before == 1
    async with approval.pool.acquire() as conn:
        gates = await conn.fetchval("SELECT count(*) FROM approval.gates WHERE pipeline_id = $1", pipeline)
    assert gates == 1


async def fetch_all(approval: ApprovalHarness, topic: str, count: int) -> list:
    return await read_records(approval.settings.kafka_bootstrap, topic, count)


async def test_the_gauges_count_pending_gates_and_those_due_soon(approval: ApprovalHarness) -> None:
    soon = await approval.open_gate(request(timeout="30m"))
    await approval.open_gate(request(timeout="1d"))
    pending, due = await refresh_gate_gauges(
        approval.pool, approval.clock, within=timedelta(hours=1), repository=approval.repository
    )
    assert (pending, due) == (2, 1)
    assert (value("signoff_gates_pending"), value("signoff_gates_expiring_soon")) == (2, 1)

    await approval.send(decision(approver="bob", token=soon.token, gate_id=soon.gate_id))
    await approval.wait_for(APPROVED, where=lambda d: d.gate_id == soon.gate_id)
    await refresh_gate_gauges(approval.pool, approval.clock, within=timedelta(hours=1), repository=approval.repository)
    assert (value("signoff_gates_pending"), value("signoff_gates_expiring_soon")) == (1, 0)
