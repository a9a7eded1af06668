"""A running executor role on the real broker and PostgreSQL: `executor_spec` in a `Service`, consuming this
test's own request and gate topics (so other tests' events never reach it), a FixedClock, and readers of what it
published (its outbox rows, which the relay publishes to the real topics)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from signoff import contracts as wire
from signoff.contracts.events import ApprovalCause, DecisionStatus, Vote
from signoff.executor.domain.actions import RunShellScript
from signoff.executor.domain.definitions import Definitions
from signoff.executor.repository import SCHEMA
from signoff.executor.service import executor_spec
from signoff.executor.settings import ExecutorSettings
from signoff.runtime.clock import FixedClock
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "pipelines" / "blue-green.yaml"
CATALOG = REPO / "examples" / "catalog.yaml"
START = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def execution_request(
    yaml_text: str | None, *, pipeline_id: str, variables: dict[str, str] | None = None, user: str = "alice"
) -> wire.ExecutionRequested:
    return wire.ExecutionRequested(
        execution_id=f"exec-{uuid.uuid4().hex[:10]}",
        pipeline_id=pipeline_id,
        variables=variables or {},
        triggered_by=wire.Person(user=user, name=user.title()),
        requested_at=START,
        pipeline_yaml=yaml_text,
    )


def script_action(
    script: str, *, outputs: dict[str, str] | None = None, env=None, timeout=timedelta(seconds=30)
) -> RunShellScript:
    """The action that runs `script` as a step, as the state machine would dispatch it."""
    return RunShellScript(
        execution_id="ex",
        step_path="s.step",
        attempt=1,
        step_name="step",
        script=script,
        environment=env or {},
        output_variables=outputs or {},
        timeout=timeout,
        deadline=datetime(2026, 1, 1, tzinfo=UTC) + timeout,
    )


def gate_opened(request: wire.ApprovalRequested, *, gate_id: str | None = None) -> wire.GateOpened:
    """What the approval service would publish for `request`."""
    return wire.GateOpened(
        **request.model_dump(exclude_none=True),
        gate_id=gate_id or f"gate-{uuid.uuid4().hex[:10]}",
        token=uuid.uuid4().hex,
        opened_at=START,
        expires_at=START + request.timeout_span,
    )


def gate_approved(opened: wire.GateOpened, inputs: dict[str, str], approver: str = "dana") -> wire.GateApproved:
    return wire.GateApproved(
        gate_id=opened.gate_id,
        key=opened.key,
        cause=ApprovalCause.APPROVERS,
        votes=[
            Vote(
                decision_id=uuid.uuid4().hex,
                source="cli",
                approver=approver,
                status=DecisionStatus.APPROVED,
                comment="looks good",
                inputs=inputs,
                decided_at=START,
            )
        ],
        inputs=inputs,
        approved_at=START,
    )


class ExecutorRole:
    """The executor role of one test, and what the test needs around it."""

    def __init__(self, settings, names, database_url: str) -> None:
        self.requests = names.topic("signoff.execution.requests")
        self.gates = names.topic("signoff.approval.gates")
        self.settings = ExecutorSettings(
            **{
                **settings.model_dump(),
                "catalog_file": CATALOG,
                "runner_poll_seconds": 0.05,
                "script_lease_seconds": 2,
            }
        )
        self.group = names.group("signoff-executor")
        self.clock = FixedClock(START)
        self.definitions = Definitions()
        """The role's parsed pipelines and plans (what its consumer and runner load executions with)."""
        self.dsn = database_url
        self.service: Service | None = None

    def spec(self):
        return dataclasses.replace(
            executor_spec(self.settings, self.clock, definitions=self.definitions),
            group_id=self.group,
            consumes=(self.requests, self.gates),
        )

    async def start(self) -> None:
        self.pool = await create_pool(self.dsn)
        self.producer: AIOKafkaProducer = make_producer(self.settings, "test-producer")
        await self.producer.start()
        await self.start_service()

    async def start_service(self) -> None:
        self.service = Service(self.spec(), self.settings)
        await self.service.start()

    async def stop_service(self) -> None:
        assert self.service is not None
        await self.service.stop()
        self.service = None

    async def stop(self) -> None:
        if self.service is not None:
            await self.stop_service()
        await self.producer.stop()
        await self.pool.close()

    async def send(self, data: wire.EventData) -> wire.Event:
        event = wire.new_event(data, source="urn:signoff:test")
        value, headers = wire.encode(event)
        topic = (
            self.requests if isinstance(data, wire.ExecutionRequested | wire.ExecutionAbortRequested) else self.gates
        )
        await self.producer.send_and_wait(topic, value, key=wire.message_key(event), headers=headers)
        return event

    # ---------------------------------------------------------------------------------------------- reading

    async def outbox(self) -> list:
        async with self.pool.acquire() as conn:
            return await conn.fetch(f'SELECT aggregatetype, type, payload, headers FROM "{SCHEMA}".outbox ORDER BY seq')  # noqa: S608

    async def published(self, event_type: str, execution_id: str) -> list:
        """Data of the events of `event_type` about `execution_id` the role wrote to its outbox, oldest first."""
        found = []
        for row in await self.outbox():
            if row["type"] != event_type:
                continue
            event = wire.decode(bytes(row["payload"]), [("content-type", b"application/cloudevents+json")])
            data = event.data
            about = data.key.execution_id if hasattr(data, "key") else data.execution_id
            if about == execution_id:
                found.append(data)
        return found

    async def wait_for(self, event_type: str, execution_id: str, *, where=lambda data: True):
        async def found():
            return next((d for d in await self.published(event_type, execution_id) if where(d)), None)

        return await eventually(found, timeout=30, what=f"{event_type} of {execution_id}")

    async def wait_consumed(self, event: wire.Event) -> None:
        """Until the role applied (or skipped) `event`: its inbox row is committed with whatever it changed."""

        async def seen():
            async with self.pool.acquire() as conn:
                return await conn.fetchval(
                    f'SELECT true FROM "{SCHEMA}".inbox WHERE event_id = $1',  # noqa: S608
                    event.id,
                )

        await eventually(seen, timeout=30, what=f"event {event.id} consumed")

    async def execution(self, execution_id: str):
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(f'SELECT * FROM "{SCHEMA}".executions WHERE id = $1', execution_id)  # noqa: S608

    async def wait_status(self, execution_id: str, status: str):
        async def reached():
            row = await self.execution(execution_id)
            return row if row is not None and row["status"] == status else None

        return await eventually(reached, timeout=30, what=f"execution {execution_id} {status}")

    async def step(self, execution_id: str, path: str) -> dict:
        row = await self.execution(execution_id)
        return next(step for step in row["state"]["steps"] if step["path"] == path)

    async def wait_step(self, execution_id: str, path: str, status: str) -> dict:
        async def reached():
            row = await self.execution(execution_id)
            if row is None:
                return None
            step = next(step for step in row["state"]["steps"] if step["path"] == path)
            return step if step["status"] == status else None

        return await eventually(reached, timeout=30, what=f"step {path} of {execution_id} {status}")

    async def wait_script_running(self, execution_id: str, path: str) -> None:
        """Until the step's script process runs (recorded with its pid): a step is RUNNING from its dispatch, and
        its script starts only after that commit (later still when it waits for a script slot)."""

        async def running():
            async with self.pool.acquire() as conn:
                return await conn.fetchval(
                    f"""SELECT pid FROM "{SCHEMA}".script_processes
                        WHERE execution_id = $1 AND step_path = $2 AND pid IS NOT NULL""",  # noqa: S608
                    execution_id,
                    path,
                )

        await eventually(running, timeout=30, what=f"the script of step {path} of {execution_id} to run")

    async def logs(self, execution_id: str) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT step_path, output FROM "{SCHEMA}".step_logs WHERE execution_id = $1',  # noqa: S608
                execution_id,
            )
        return {row["step_path"]: row["output"] for row in rows}

    async def gate_row(self, execution_id: str):
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(f'SELECT * FROM "{SCHEMA}".gates WHERE execution_id = $1', execution_id)  # noqa: S608

    async def run_to_gate(self, request: wire.ExecutionRequested) -> tuple[wire.ApprovalRequested, wire.GateOpened]:
        """Start `request`, wait for its approval request, and open the gate as the approval service would."""
        await self.send(request)
        approval = await self.wait_for(wire.ApprovalRequested.event_type, request.execution_id)
        opened = gate_opened(approval)
        await self.send(opened)
        await eventually(lambda: self.gate_row(request.execution_id), timeout=30, what="gate recorded")
        return approval, opened

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)


@pytest.fixture
async def executor(settings, names, database_url) -> AsyncIterator[ExecutorRole]:
    role = ExecutorRole(settings, names, database_url)
    await role.start()
    try:
        yield role
    finally:
        await role.stop()
