"""The whole approval role (`approval_spec` in a Service): real topic names, outbox relay, directory file, expiry loop.

Topics are shared with other tests on the broker, so every check filters by this test's natural keys / gate ids."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from signoff import contracts as wire
from signoff.approval.service import DECISIONS_TOPIC, GATES_TOPIC, REQUESTS_TOPIC, approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.runtime.clock import FixedClock
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import KEY, START, decision, request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


class GatesReader:
    """Reads the gates topic from the start, keeping the events about the gates of this test."""

    def __init__(self, settings, keys: set[str]) -> None:
        self.consumer = AIOKafkaConsumer(
            GATES_TOPIC,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.keys = keys
        self.events: list[wire.Event] = []

    async def poll(self) -> None:
        for records in (await self.consumer.getmany(timeout_ms=200)).values():
            for record in records:
                event = wire.decode(record.value, record.headers or ())
                if getattr(event.data, "key", None) is not None and event.data.key.as_path() in self.keys:
                    self.events.append(event)

    async def wait_for(self, event_type: str, gate_key: wire.GateKey):
        async def found():
            await self.poll()
            return next(
                (e.data for e in self.events if e.type == event_type and e.data.key == gate_key),
                None,
            )

        return await eventually(found, timeout=30, what=f"{event_type} for {gate_key.as_path()}")


async def test_the_role_opens_decides_and_expires_through_the_broker(settings, names, tmp_path: Path) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  sre:\n    - {user: bob, email: bob@example.com, slack: U1}\n    - carol\n")
    role_settings = ApprovalSettings(
        **{
            **settings.model_dump(),
            "decision_keys": {"cli": KEY.decode()},
            "directory_file": directory,
            "expiry_interval_seconds": 0.05,
        }
    )
    clock = FixedClock(START)
    spec = dataclasses.replace(approval_spec(role_settings, clock), group_id=names.group("signoff-approval"))
    service = Service(spec, role_settings)
    pipeline = f"role_{uuid.uuid4().hex[:8]}"
    voted = request(pipeline=pipeline, timeout="1d")
    timing_out = request(pipeline=pipeline, step="second", timeout="1h", timeout_action="fail")
    reader = GatesReader(role_settings, {voted.key.as_path(), timing_out.key.as_path()})
    producer = make_producer(role_settings, "test-producer")
    await service.start()
    await producer.start()
    await reader.consumer.start()
    try:

        async def send(data: wire.EventData, topic: str) -> None:
            event = wire.new_event(data, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)

        await send(voted, REQUESTS_TOPIC)
        await send(timing_out, REQUESTS_TOPIC)
        opened = await reader.wait_for(wire.GateOpened.event_type, voted.key)
        assert {a.user for a in opened.eligible_approvers} == {"bob", "carol"}
        assert next(a for a in opened.eligible_approvers if a.user == "bob").slack == "U1"

        await send(decision(approver="bob", token=opened.token, gate_id=opened.gate_id), DECISIONS_TOPIC)
        approved = await reader.wait_for(wire.GateApproved.event_type, voted.key)
        assert approved.gate_id == opened.gate_id and [v.approver for v in approved.votes] == ["bob"]

        await reader.wait_for(wire.GateOpened.event_type, timing_out.key)
        clock.advance(timedelta(hours=1))
        expired = await reader.wait_for(wire.GateExpired.event_type, timing_out.key)
        assert expired.expired_at == START + timedelta(hours=1)
    finally:
        await reader.consumer.stop()
        await producer.stop()
        await service.stop()
