"""A running approval handler on the real broker and PostgreSQL: per-test request and decision topics, a
ConsumerLoop with the ApprovalHandler, a FixedClock, and readers of what it published (the outbox rows)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from signoff import contracts as wire
from signoff.approval.handlers import ApprovalHandler
from signoff.approval.repository import SCHEMA, ApprovalRepository
from signoff.approval.settings import ApprovalSettings
from signoff.contracts.events import StageMetadata
from signoff.contracts.topics import CDEVENTS
from signoff.runtime.clock import FixedClock
from signoff.runtime.consumer import ConsumerLoop
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import ensure_topics, make_consumer, make_producer
from tests.support.waiting import eventually

KEY = b"cli-secret"
START = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def request(
    *,
    pipeline: str = "payments",
    execution: str | None = None,
    stage: str = "deploy_prod",
    step: str = "approve",
    attempt: int = 1,
    groups: tuple[str, ...] = ("sre",),
    users: tuple[str, ...] = (),
    minimum_count: int = 1,
    executor: str = "alice",
    disallow_executor: bool = False,
    timeout: str = "1h",
    timeout_action: str = "fail",
    auto_reject_previous: bool = False,
) -> wire.ApprovalRequested:
    return wire.ApprovalRequested(
        key=wire.GateKey(
            pipeline_id=pipeline,
            execution_id=execution or f"exec-{uuid.uuid4().hex[:8]}",
            stage_id=stage,
            step_id=step,
            attempt=attempt,
        ),
        pipeline_name="Payments",
        stage_name="Deploy prod",
        step_name="Approve",
        triggered_by=wire.Person(user=executor),
        policy=wire.ApprovalPolicy(
            user_groups=list(groups),
            users=list(users),
            minimum_count=minimum_count,
            disallow_pipeline_executor=disallow_executor,
        ),
        timeout=timeout,
        timeout_action=timeout_action,
        auto_reject_previous_approvals=auto_reject_previous,
        current_stage=StageMetadata(identifier=stage, name="Deploy prod", type="Deployment"),
        requested_at=START,
    )


def decision(
    *,
    approver: str,
    token: str,
    gate_id: str | None = None,
    status: str = "Approved",
    decision_id: str | None = None,
    source: str = "cli",
    key: bytes | None = KEY,
    **extra,
) -> wire.ApprovalDecision:
    made = wire.ApprovalDecision(
        decision_id=decision_id or uuid.uuid4().hex,
        source=source,
        gate_id=gate_id,
        token=token,
        status=status,
        approver=approver,
        decided_at=START,
        **extra,
    )
    return made.signed(key) if key is not None else made


class ApprovalHarness:
    def __init__(self, settings, names, database_url) -> None:
        self.requests = names.topic("signoff.approval.requests")
        self.decisions = names.topic("signoff.approval.decisions")
        self.dead_letters = names.topic("signoff.deadletter")
        self.group = names.group("signoff-approval")
        self.settings = ApprovalSettings(
            **{**settings.model_dump(), "decision_keys": {"cli": KEY.decode()}, "max_timeout": "30d"}
        )
        self.dsn = database_url
        self.clock = FixedClock(START)
        self.repository = ApprovalRepository(SCHEMA)

    async def start(self) -> None:
        await ensure_topics(
            self.settings.model_copy(update={"kafka_topic_partitions": 1}),
            [self.requests, self.decisions, self.dead_letters],
        )
        self.pool = await create_pool(self.dsn)
        self.producer: AIOKafkaProducer = make_producer(self.settings, "test-producer")
        await self.producer.start()
        self.handler = ApprovalHandler(self.settings, clock=self.clock, repository=self.repository)
        self.loop = ConsumerLoop(
            name=self.group,
            topics=[self.requests, self.decisions],
            consumer=make_consumer(self.settings, [self.requests, self.decisions], self.group, "test-approval"),
            pool=self.pool,
            schema=SCHEMA,
            handler=self.handler,
            dead_letter_topic=self.dead_letters,
        )
        await self.loop.start()
        self.task = asyncio.create_task(self.loop.run())

    async def stop(self) -> None:
        self.loop.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.loop.consumer.stop()
        await self.producer.stop()
        await self.pool.close()

    async def directory(self, members: dict[str, list[str]]) -> None:
        rows = [
            (group, user, f"{user}@example.com", {"slack": f"U-{user}"})
            for group, users in members.items()
            for user in users
        ]
        async with self.pool.acquire() as conn:
            await self.repository.upsert_members(conn, rows)

    async def send(self, data: wire.EventData, *, event_id: str | None = None) -> wire.Event:
        event = wire.new_event(data, source="urn:signoff:test", id=event_id)
        value, headers = wire.encode(event)
        topic = self.decisions if isinstance(data, wire.ApprovalDecision) else self.requests
        await self.producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)
        return event

    async def published(self, event_type: str | None = None) -> list[wire.Event]:
        """Events the service wrote to its outbox (what the relay publishes), oldest first; the CDEvents (another
        contract, see `cdevents`) left out."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT payload, headers FROM "{SCHEMA}".outbox WHERE aggregatetype <> $1 ORDER BY seq',  # noqa: S608
                CDEVENTS.name,
            )
        events = [
            wire.decode(bytes(row["payload"]), [("content-type", b"application/cloudevents+json")]) for row in rows
        ]
        return [e for e in events if event_type is None or e.type == event_type]

    async def wait_for(self, event_type: str, count: int = 1, *, where=lambda data: True) -> list:
        async def found():
            matching = [e.data for e in await self.published(event_type) if where(e.data)]
            return matching if len(matching) >= count else None

        return await eventually(found, timeout=30, what=f"{count} x {event_type}")

    async def open_gate(self, req: wire.ApprovalRequested) -> wire.GateOpened:
        await self.send(req)
        (opened,) = await self.wait_for(wire.GateOpened.event_type, where=lambda d: d.key == req.key)
        return opened

    async def gate_status(self, gate_id: str) -> str:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(f'SELECT status FROM "{SCHEMA}".gates WHERE id = $1', gate_id)  # noqa: S608


@pytest.fixture
async def approval(settings, names, database_url) -> AsyncIterator[ApprovalHarness]:
    harness = ApprovalHarness(settings, names, database_url)
    await harness.start()
    await harness.directory({"sre": ["bob", "carol", "dave", "alice"], "qa": ["erin"]})
    try:
        yield harness
    finally:
        await harness.stop()
