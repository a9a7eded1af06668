"""The whole approval role on the real broker publishes each gate's lifecycle on signoff.cdevents.v1: every record
parses with the CloudEvents SDK, its data validates against the official CDEvents schemas, and each gate event has
exactly one CDEvent (same outbox transaction).

Topics are shared with other tests on the broker, so every check filters by this test's gate ids."""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from signoff import contracts as wire
from signoff.approval.service import CDEVENTS_TOPIC, DECISIONS_TOPIC, REQUESTS_TOPIC, approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.contracts.cdevents import chain_id
from signoff.runtime.clock import FixedClock
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import KEY, START, decision, request
from tests.integration.approval.test_service_role import GatesReader
from tests.support.cdevents import parse_record
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

BASE = "https://signoff.example.com"


class CDEventsReader:
    """Reads signoff.cdevents.v1 from the start with the CloudEvents SDK, keeping the records about `gate_ids`."""

    def __init__(self, settings) -> None:
        self.consumer = AIOKafkaConsumer(
            CDEVENTS_TOPIC,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.gate_ids: set[str] = set()
        self.by_gate: dict[str, list[dict]] = defaultdict(list)
        self._unmatched: list[tuple] = []

    async def poll(self) -> None:
        for records in (await self.consumer.getmany(timeout_ms=200)).values():
            for record in records:
                self._unmatched.append((record.key, record.value, record.headers or ()))
        kept = []
        for key, value, headers in self._unmatched:
            if key is None or key.decode() not in self.gate_ids:
                kept.append((key, value, headers))
                continue
            event, data = parse_record(value, headers, key)  # asserts the schema and the CloudEvent attributes
            assert event.get_extension("partitionkey") == key.decode()  # the SDK's name for the record key
            assert key.decode() == data["subject"]["id"]
            assert dict(headers)["content-type"] == b"application/cloudevents+json"
            self.by_gate[key.decode()].append(data)
        self._unmatched = kept

    async def wait_for(self, gate_id: str, kinds: list[str]) -> list[dict]:
        """The gate's CDEvents once they are exactly `kinds` (created / updated / closed), in order."""

        async def found():
            await self.poll()
            got = [d["context"]["type"].split(".")[3] for d in self.by_gate[gate_id]]
            assert got == kinds[: len(got)], f"gate {gate_id}: {got}, expected {kinds}"
            return self.by_gate[gate_id] if len(got) == len(kinds) else None

        return await eventually(found, timeout=30, what=f"CDEvents {kinds} of gate {gate_id}")


async def test_a_gates_lifecycle_is_published_as_cdevents(settings, names, tmp_path: Path) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  sre: [bob, carol]\n")
    role_settings = ApprovalSettings(
        **{
            **settings.model_dump(),
            "decision_keys": {"cli": KEY.decode()},
            "directory_file": directory,
            "expiry_interval_seconds": 0.05,
            "approval_page_url": BASE + "/",
        }
    )
    clock = FixedClock(START)
    spec = dataclasses.replace(approval_spec(role_settings, clock), group_id=names.group("signoff-approval"))
    service = Service(spec, role_settings)
    pipeline, execution = f"cde_{uuid.uuid4().hex[:8]}", f"exec-{uuid.uuid4().hex[:8]}"
    quorum = request(pipeline=pipeline, execution=execution, step="quorum", minimum_count=2, timeout="1d")
    rejected = request(pipeline=pipeline, execution=execution, step="rejected", timeout="1d")
    cancelled = request(pipeline=pipeline, execution=execution, step="cancelled", timeout="1d")
    expiring = request(pipeline=pipeline, step="expiring", timeout="1h", executor="dana@example.com")
    requests = (quorum, rejected, cancelled, expiring)
    gates = GatesReader(role_settings, {r.key.as_path() for r in requests})
    cdevents = CDEventsReader(role_settings)
    producer = make_producer(role_settings, "test-producer")
    await service.start()
    await producer.start()
    await gates.consumer.start()
    await cdevents.consumer.start()
    try:

        async def send(data: wire.EventData, topic: str) -> None:
            event = wire.new_event(data, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)

        opened = {}
        for each in requests:
            await send(each, REQUESTS_TOPIC)
        for each in requests:
            opened[each.key.step_id] = await gates.wait_for(wire.GateOpened.event_type, each.key)
        cdevents.gate_ids |= {o.gate_id for o in opened.values()}

        # Two counted votes on a gate that needs two: updated, updated, closed.
        gate = opened["quorum"]
        await send(decision(approver="bob", token=gate.token, gate_id=gate.gate_id), DECISIONS_TOPIC)
        await gates.wait_for(wire.VoteRecorded.event_type, quorum.key)
        await send(decision(approver="carol", token=gate.token, gate_id=gate.gate_id), DECISIONS_TOPIC)
        created, first, second, closed = await cdevents.wait_for(
            gate.gate_id, ["created", "updated", "updated", "closed"]
        )
        assert created["subject"]["content"] == {
            "approvalDetailsUrl": f"{BASE}/gates/{gate.gate_id}",
            "resourceTargetUrl": f"{BASE}/api/v1/executions/{execution}",
            "requestor": "urn:signoff:user:alice",
        }
        assert [
            (d["subject"]["content"]["responder"], d["subject"]["content"]["decision"]) for d in (first, second)
        ] == [
            ("urn:signoff:user:bob", "approved"),
            ("urn:signoff:user:carol", "approved"),
        ]
        assert closed["subject"]["content"]["status"] == "approved"
        assert closed["subject"]["content"]["responder"] == "urn:signoff:user:carol"

        # A rejection by vote, and a vote that is refused (not eligible): no CDEvent for the refusal.
        gate = opened["rejected"]
        await send(decision(approver="mallory", token=gate.token, gate_id=gate.gate_id), DECISIONS_TOPIC)
        await send(decision(approver="bob", token=gate.token, gate_id=gate.gate_id, status="Rejected"), DECISIONS_TOPIC)
        *_, closed = await cdevents.wait_for(gate.gate_id, ["created", "updated", "closed"])
        assert (closed["subject"]["content"]["status"], closed["subject"]["content"]["decision"]) == (
            "rejected",
            "rejected",
        )

        # The pipeline withdraws a gate.
        gate = opened["cancelled"]
        cancel = wire.ApprovalCancelRequested(key=cancelled.key, gate_id=gate.gate_id, requested_at=START)
        await send(cancel, REQUESTS_TOPIC)
        *_, closed = await cdevents.wait_for(gate.gate_id, ["created", "closed"])
        assert closed["subject"]["content"]["status"] == "cancelled"
        assert closed["subject"]["content"]["responder"] == "urn:signoff:approval"

        # The expiry loop closes a gate at its deadline (another execution: another chain).
        gate = opened["expiring"]
        clock.advance(timedelta(hours=1))
        created, closed = await cdevents.wait_for(gate.gate_id, ["created", "closed"])
        assert created["subject"]["content"]["requestor"] == "urn:signoff:user:dana@example.com"
        assert closed["subject"]["content"]["status"] == "expired"
        assert closed["context"]["timestamp"] == wire.format_utc(START + timedelta(hours=1))

        chains = {step: {d["context"]["chainId"] for d in cdevents.by_gate[opened[step].gate_id]} for step in opened}
        assert chains == {
            "quorum": {chain_id(execution)},
            "rejected": {chain_id(execution)},
            "cancelled": {chain_id(execution)},
            "expiring": {chain_id(expiring.key.execution_id)},
        }
        # One CDEvent per gate event (the refused decision excepted), none doubled: the gate events are read until
        # the reader has them all (partitions are polled in any order).
        expected = {gate_id: len(found) for gate_id, found in cdevents.by_gate.items()}

        async def gate_events_per_gate():
            await gates.poll()
            counts = defaultdict(int)
            for event in gates.events:
                if not isinstance(event.data, wire.DecisionRefused):
                    counts[event.data.gate_id] += 1
            return dict(counts) if dict(counts) == expected else None

        await eventually(gate_events_per_gate, timeout=30, what=f"gate events per gate {expected}")
        ids = [d["context"]["id"] for found in cdevents.by_gate.values() for d in found]
        assert len(ids) == len(set(ids)) == 11
    finally:
        await cdevents.consumer.stop()
        await gates.consumer.stop()
        await producer.stop()
        await service.stop()
