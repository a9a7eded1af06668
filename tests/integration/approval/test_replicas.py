"""Two replicas of the approval role in one consumer group: they share the partitions and the expiry loop, and
no gate opens or expires twice."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

from signoff import contracts as wire
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.runtime.clock import FixedClock
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Lane, Service
from tests.integration.approval.conftest import KEY, START, request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

GATES = 24


async def _published(dsn: str, event_type: str, pipeline: str) -> Counter[str]:
    """How many times each of `pipeline`'s gates had its `event_type` event written to the outbox (by either
    replica)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT o.aggregateid FROM approval.outbox o JOIN approval.gates g ON g.id = o.aggregateid
               WHERE o.type = $1 AND g.pipeline_id = $2""",
            event_type,
            pipeline,
        )
    finally:
        await conn.close()
    return Counter(row["aggregateid"] for row in rows)


async def test_two_replicas_share_partitions_and_expiry_without_double_transitions(
    settings, names, database_url, tmp_path
):
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  sre: [bob]\n")  # the requests' group must exist, or they are refused
    role_settings = ApprovalSettings(
        **{
            **settings.model_dump(),
            "decision_keys": {"cli": KEY.decode()},
            "expiry_interval_seconds": 0.05,
            "directory_file": directory,
        }
    )
    clock = FixedClock(START)  # one clock for both: they must agree on what is due
    group = names.group("signoff-approval")
    # Topics of this test only (three partitions each, as in production): the real names carry other tests' events.
    requests_topic = names.topic("signoff.approval.requests")
    decisions_topic = names.topic("signoff.approval.decisions")
    spec = dataclasses.replace(
        approval_spec(role_settings, clock),
        group_id=group,
        consumes=(requests_topic,),
        lanes=(Lane("decisions", (decisions_topic,)),),
    )
    replicas = [Service(spec, role_settings) for _ in range(2)]
    producer = make_producer(role_settings, "test-producer")
    for replica in replicas:
        await replica.start()
    await producer.start()
    try:

        async def both_assigned() -> bool:
            return all(replica.loop.consumer.assignment() for replica in replicas)

        await eventually(both_assigned, what="both replicas to own partitions")
        owned = [replica.loop.consumer.assignment() for replica in replicas]
        assert not owned[0] & owned[1]

        pipeline = f"replicas_{uuid.uuid4().hex[:8]}"
        requests = [request(pipeline=pipeline, step=f"step_{i}", timeout="1h") for i in range(GATES)]
        for data in requests:
            event = wire.new_event(data, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(requests_topic, value, key=wire.message_key(event), headers=headers)

        async def all_opened() -> bool:
            return len(await _published(database_url, wire.GateOpened.event_type, pipeline)) == GATES

        await eventually(all_opened, what="every gate opened")
        clock.advance(timedelta(hours=1))

        async def all_expired() -> bool:
            return len(await _published(database_url, wire.GateExpired.event_type, pipeline)) == GATES

        await eventually(all_expired, what="every gate expired")
        opened = await _published(database_url, wire.GateOpened.event_type, pipeline)
        expired = await _published(database_url, wire.GateExpired.event_type, pipeline)
        assert set(opened.values()) == {1} and set(expired.values()) == {1}
        assert set(opened) == set(expired)
    finally:
        await producer.stop()
        for replica in replicas:
            await replica.stop()
