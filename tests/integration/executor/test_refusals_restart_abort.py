"""What the executor refuses (dead-lettered with the reason and the path), what survives a restart, and aborts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from signoff import contracts as wire
from signoff.contracts.topics import DEAD_LETTER_TOPIC
from signoff.executor.domain.execution import RESTART_REASON
from signoff.executor.repository import ExecutorRepository
from signoff.runtime.outbox import headers_from_json
from tests.integration.executor.conftest import EXAMPLE, START, execution_request, gate_approved
from tests.support.waiting import eventually
from tests.unit.executor.builders import approval, as_yaml, deployment, parallel, pipeline, shell, stage

pytestmark = pytest.mark.integration


async def _dead_letters(executor) -> dict[str, dict[str, str]]:
    """Execution id -> the signoff-dlq-* headers of its dead-lettered request (outbox rows of the DLQ topic)."""
    letters = {}
    for row in await executor.outbox():
        if row["aggregatetype"] != DEAD_LETTER_TOPIC:
            continue
        headers = {name: value.decode() for name, value in headers_from_json(row["headers"])}
        event = wire.decode(bytes(row["payload"]), [("content-type", b"application/cloudevents+json")])
        letters[event.data.execution_id] = headers
    return letters


async def test_invalid_pipelines_are_dead_lettered_with_the_path_named(executor) -> None:
    parallel_approval = as_yaml(pipeline(stage("s", parallel(shell("a"), approval("approve")))))
    unknown_type = as_yaml(
        pipeline(stage("s", {"step": {"type": "K8sRollingDeploy", "name": "x", "identifier": "x", "spec": {}}}))
    )
    bad_ref = as_yaml(pipeline(deployment("d", shell("a"), service="billing")))
    requests = {
        "parallel": execution_request(parallel_approval, pipeline_id="test_pipeline"),
        "type": execution_request(unknown_type, pipeline_id="test_pipeline"),
        "ref": execution_request(bad_ref, pipeline_id="test_pipeline"),
        "unknown": execution_request(None, pipeline_id="never_seen"),
        "variables": execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green", variables={"x": "1"}),
    }
    for request in requests.values():
        await executor.send(request)

    async def all_refused():
        letters = await _dead_letters(executor)
        return letters if len(letters) == len(requests) else None

    letters = await eventually(all_refused, timeout=30, what="five dead letters")
    by_case = {case: letters[request.execution_id] for case, request in requests.items()}
    assert by_case["parallel"]["signoff-dlq-reason"] == "invalid_pipeline"
    assert (
        "pipeline.stages[0].stage.spec.execution.steps[0].parallel[1].step: approval steps cannot run in parallel"
        in by_case["parallel"]["signoff-dlq-error"]
    )
    assert "steps[0].step.type: unknown step type 'K8sRollingDeploy'" in by_case["type"]["signoff-dlq-error"]
    assert "spec.service.serviceRef: unknown service 'billing'" in by_case["ref"]["signoff-dlq-error"]
    assert by_case["unknown"]["signoff-dlq-reason"] == "unknown_pipeline"
    assert by_case["variables"]["signoff-dlq-reason"] == "invalid_variables"
    assert "unknown pipeline variable 'x'" in by_case["variables"]["signoff-dlq-error"]
    assert all(h["signoff-dlq-original-topic"] == executor.requests for h in letters.values())
    for request in requests.values():
        assert await executor.execution(request.execution_id) is None
        (failed,) = await executor.published(wire.ExecutionFailed.event_type, request.execution_id)
        assert failed.cause == "invalid_pipeline"


async def test_a_restarted_executor_resumes_a_waiting_execution_on_approval(executor) -> None:
    request = execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green")
    _, opened = await executor.run_to_gate(request)

    await executor.stop_service()  # the gate stays open in the approval service meanwhile
    await executor.start_service()  # a new process: a new runner instance, the same database and consumer group

    await executor.send(gate_approved(opened, {"foo": "after-restart"}))
    await executor.wait_step(request.execution_id, "production_rollout.roll_out.bake", "RUNNING")
    assert (await executor.logs(request.execution_id))[
        "staging_blue_green.echo_input"
    ].strip() == "foo is after-restart"
    executor.advance(timedelta(minutes=15))
    await executor.wait_status(request.execution_id, "SUCCEEDED")
    # Exactly one approval request: the restart neither lost nor repeated it.
    assert len(await executor.published(wire.ApprovalRequested.event_type, request.execution_id)) == 1


async def test_a_script_running_when_the_executor_stops_fails_by_the_restart_rule(executor) -> None:
    text = as_yaml(pipeline(stage("s", shell("long", "sleep 60"), shell("next", "echo next"))))
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)
    await executor.wait_step(request.execution_id, "s.long", "RUNNING")
    await executor.wait_script_running(request.execution_id, "s.long")

    await executor.stop_service()
    await executor.start_service()

    row = await executor.wait_status(request.execution_id, "FAILED")
    step = await executor.step(request.execution_id, "s.long")
    assert step["status"] == "FAILED" and step["reason"] == RESTART_REASON
    assert RESTART_REASON in row["reason"]
    assert (await executor.step(request.execution_id, "s.next"))["status"] == "SKIPPED"


async def test_a_script_past_its_timeout_on_the_executor_clock_fails_and_is_killed(executor) -> None:
    text = as_yaml(pipeline(stage("s", shell("slow", "sleep 60", timeout="1m"))))
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)
    await executor.wait_step(request.execution_id, "s.slow", "RUNNING")
    executor.advance(timedelta(minutes=1))
    step = await executor.wait_step(request.execution_id, "s.slow", "FAILED")
    assert step["reason"] == "timed out after 1m"
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, request.execution_id)
    assert failed.cause == "timeout"

    async def no_script_left():
        return not any(t.get_name().startswith("script ") and not t.done() for t in asyncio.all_tasks())

    await eventually(no_script_left, timeout=10, what="the script task to end")


async def test_abort_cancels_the_waiting_gate(executor) -> None:
    request = execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green")
    _, opened = await executor.run_to_gate(request)
    await executor.send(
        wire.ExecutionAbortRequested(
            execution_id=request.execution_id,
            requested_by=wire.Person(user="bob"),
            reason="wrong tag",
            requested_at=START,
        )
    )
    cancel = await executor.wait_for(wire.ApprovalCancelRequested.event_type, request.execution_id)
    assert cancel.gate_id == opened.gate_id and cancel.key == opened.key
    row = await executor.wait_status(request.execution_id, "ABORTED")
    assert row["reason"] == "aborted by bob: wrong tag"
    aborted = await executor.wait_for(wire.ExecutionAborted.event_type, request.execution_id)
    assert aborted.reason == "aborted by bob: wrong tag"
    # The cancelled gate's own event, arriving afterwards, changes nothing.
    late = [
        await executor.send(wire.GateCancelled(gate_id=opened.gate_id, key=opened.key, reason="x", cancelled_at=START)),
        await executor.send(gate_approved(opened, {"foo": "late"})),
    ]
    for event in late:
        await executor.wait_consumed(event)
    assert (await executor.execution(request.execution_id))["status"] == "ABORTED"


async def test_an_execution_the_runner_cannot_load_fails_visibly_and_holds_up_no_other(executor) -> None:
    broken = execution_request(as_yaml(pipeline(stage("s", shell("a", "sleep 60")))), pipeline_id="test_pipeline")
    await executor.send(broken)
    await executor.wait_step(broken.execution_id, "s.a", "RUNNING")
    async with executor.pool.acquire() as conn:
        # A stored state this version cannot read (e.g. written by a newer executor), due now.
        await conn.execute(
            "UPDATE executor.executions SET state = '{\"schema_version\": 99}', runnable = true WHERE id = $1",
            broken.execution_id,
        )
    healthy = execution_request(as_yaml(pipeline(stage("s", shell("b", "echo fine")))), pipeline_id="test_pipeline")
    await executor.send(healthy)
    await executor.wait_status(healthy.execution_id, "SUCCEEDED")
    row = await executor.wait_status(broken.execution_id, "FAILED")
    assert row["reason"].startswith("the executor could not continue this execution: ValidationError")
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, broken.execution_id)
    assert failed.error == row["reason"]


async def test_a_retry_on_restart_script_runs_again_as_the_next_attempt(executor, tmp_path) -> None:
    marker = tmp_path / "first-attempt-ran"
    script = f'if [ -f {marker} ]; then echo "second attempt"; else touch {marker}; sleep 60; fi'
    text = as_yaml(pipeline(stage("s", shell("idempotent", script, spec={"retryOnRestart": True}))))
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)
    await executor.wait_step(request.execution_id, "s.idempotent", "RUNNING")
    await eventually(lambda: asyncio.to_thread(marker.exists), timeout=30, what="the first attempt to start")

    await executor.stop_service()
    await executor.start_service()

    await executor.wait_status(request.execution_id, "SUCCEEDED")
    step = await executor.step(request.execution_id, "s.idempotent")
    assert step["attempt"] == 2
    async with executor.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT attempt, output FROM executor.step_logs WHERE execution_id = $1", request.execution_id
        )
    assert [(r["attempt"], r["output"].strip()) for r in rows] == [(2, "second attempt")]


async def test_the_scripts_of_a_replica_that_died_fail_once_its_lease_runs_out(executor, monkeypatch) -> None:
    text = as_yaml(pipeline(stage("s", shell("long", "sleep 60"))))
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)
    await executor.wait_step(request.execution_id, "s.long", "RUNNING")
    await executor.wait_script_running(request.execution_id, "s.long")
    held = await executor.execution(request.execution_id)
    assert held["owner"] is not None

    # A replica that dies gives nothing back: its lease (2 s in these tests) has to run out.
    async def died(self, conn, me):
        return 0

    monkeypatch.setattr(ExecutorRepository, "release_leases", died)
    await executor.stop_service()
    await executor.start_service()

    row = await executor.wait_status(request.execution_id, "FAILED")
    assert (await executor.step(request.execution_id, "s.long"))["reason"] == RESTART_REASON
    assert row["owner"] is None and row["updated_at"] >= held["lease_until"]


async def test_a_step_the_approval_service_never_answers_fails_after_expiry_plus_grace(executor) -> None:
    """The request is lost (nothing answers it): the step fails at its deadline instead of waiting forever."""
    from signoff.executor.domain.execution import APPROVAL_ANSWER_GRACE, NO_APPROVAL_ANSWER

    request = execution_request(as_yaml(pipeline(stage("release", approval("approve")))), pipeline_id="test_pipeline")
    await executor.send(request)
    asked = await executor.wait_for(wire.ApprovalRequested.event_type, request.execution_id)
    assert asked.timeout == "1d"  # the step's own timeout bounds the wait while no GateOpened came
    await executor.wait_step(request.execution_id, "release.approve", "WAITING_APPROVAL")
    executor.advance(timedelta(days=1) + APPROVAL_ANSWER_GRACE)
    step = await executor.wait_step(request.execution_id, "release.approve", "FAILED")
    assert step["reason"] == NO_APPROVAL_ANSWER
    row = await executor.wait_status(request.execution_id, "FAILED")
    assert row["reason"] == f"step release.approve failed: {NO_APPROVAL_ANSWER}"
    # The gate, should it open late, is cancelled.
    (cancel,) = await executor.published(wire.ApprovalCancelRequested.event_type, request.execution_id)
    assert cancel.reason == NO_APPROVAL_ANSWER
