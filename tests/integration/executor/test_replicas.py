"""Two executor replicas on one database and consumer group: they share the executions (the runner claims with
FOR UPDATE SKIP LOCKED, scripts belong to the replica that started them), and no step runs twice, no approval is
requested twice, every execution ends."""

from __future__ import annotations

from collections import Counter

import pytest

from signoff import contracts as wire
from signoff.contracts.events import RunStatus
from signoff.executor.repository import SCHEMA
from signoff.runtime.service import Service
from tests.integration.executor.conftest import execution_request, gate_approved, gate_opened
from tests.unit.executor.builders import approval, as_yaml, parallel, pipeline, shell, stage

pytestmark = pytest.mark.integration

EXECUTIONS = 6


async def test_two_replicas_share_executions_without_running_a_step_twice(executor) -> None:
    second = Service(executor.spec(), executor.settings)
    await second.start()
    try:
        text = as_yaml(
            pipeline(
                stage(
                    "s",
                    parallel(shell("a", "A=1", outputs=("a",)), shell("b", "B=2", outputs=("b",))),
                    approval("approve"),
                    shell("c", 'echo "c after <+execution.steps.approve.output.approverInputs.foo>"'),
                )
            )
        )
        requests = [execution_request(text, pipeline_id="test_pipeline") for _ in range(EXECUTIONS)]
        for request in requests:
            await executor.send(request)
        for request in requests:
            approval_request = await executor.wait_for(wire.ApprovalRequested.event_type, request.execution_id)
            opened = gate_opened(approval_request)
            await executor.send(opened)
            await executor.send(gate_approved(opened, {"foo": request.execution_id}))
        for request in requests:
            await executor.wait_status(request.execution_id, "SUCCEEDED")
            # A script's report commits the last step (and so the status); the runner's next pass, on either
            # replica, publishes the end: wait for that event, then count it below.
            await executor.wait_for(wire.ExecutionSucceeded.event_type, request.execution_id)

        async with executor.pool.acquire() as conn:
            logs = await conn.fetch(f'SELECT execution_id, step_path, attempt, output FROM "{SCHEMA}".step_logs')  # noqa: S608
        runs = Counter((row["execution_id"], row["step_path"]) for row in logs)
        assert set(runs.values()) == {1} and len(runs) == 3 * EXECUTIONS
        assert all(row["attempt"] == 1 for row in logs)
        for request in requests:
            assert len(await executor.published(wire.ApprovalRequested.event_type, request.execution_id)) == 1
            assert len(await executor.published(wire.ExecutionSucceeded.event_type, request.execution_id)) == 1
            changes = await executor.published(wire.ExecutionStepChanged.event_type, request.execution_id)
            started = Counter(c.step_id for c in changes if c.status in (RunStatus.RUNNING, RunStatus.WAITING))
            assert started == {"a": 1, "b": 1, "approve": 2, "c": 1}  # approve: waiting, then its gate id
            output = next(
                row["output"]
                for row in logs
                if row["execution_id"] == request.execution_id and row["step_path"] == "s.c"
            )
            assert output.strip() == f"c after {request.execution_id}"

    finally:
        await second.stop()
