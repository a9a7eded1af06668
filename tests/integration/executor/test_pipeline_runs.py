"""The executor role runs pipelines for real on the real broker and PostgreSQL: scripts, approval requests with
resolved messages and metadata, resumption on the gate's outcome, failure on rejection or expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from signoff import contracts as wire
from signoff.contracts.events import FailureCause, RejectionCause, RunStatus
from signoff.contracts.topics import APPROVAL_REQUESTS
from tests.integration.executor.conftest import EXAMPLE, START, execution_request, gate_approved
from tests.support.waiting import eventually
from tests.unit.executor.builders import approval, as_yaml, deployment, pipeline, shell

pytestmark = pytest.mark.integration

STAGE = "staging_blue_green"


async def _published_on_topic(executor, topic: str, key: str):
    """The record with `key` on `topic`, read from the start (the topic is shared with other tests)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=executor.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def found():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.key == key.encode():
                        return record
            return None

        return await eventually(found, timeout=30, what=f"a record keyed {key} on {topic}")
    finally:
        await consumer.stop()


async def test_the_example_stops_at_the_approval_and_resumes_with_the_approver_inputs(executor) -> None:
    request = execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green", variables={"tag": "2.0.0"})
    approval_request, opened = await executor.run_to_gate(request)

    # What the approval service and the notifier get: the seed's step as written, the CD metadata resolved.
    assert approval_request.key == wire.GateKey(
        pipeline_id="checkout_blue_green",
        execution_id=request.execution_id,
        stage_id=STAGE,
        step_id="Harness_Approval_Step",
        attempt=1,
    )
    assert approval_request.message == approval_request.message_template == "Test"
    assert approval_request.triggered_by.user == "alice"
    assert approval_request.policy.user_groups == ["docs"] and approval_request.policy.minimum_count == 1
    assert [(i.name, i.default_value) for i in approval_request.approver_inputs] == [("foo", "bar")]
    assert approval_request.timeout == "1d"
    current = approval_request.current_stage
    assert current.service_refs == ["checkout"]
    assert [(e.ref, e.type, e.infrastructure_refs) for e in current.environments] == [
        ("staging", "PreProduction", ["staging_k8s"])
    ]
    assert [(a.image, a.tag) for a in current.artifacts] == [("registry.example.com/shop/checkout", "2.0.0")]
    assert current.custom_metadata == {"changeTicket": "CHG-1042"}
    (upcoming,) = approval_request.upcoming_stages
    assert upcoming.identifier == "production_rollout"
    assert upcoming.service_refs == ["checkout", "payments_worker"]
    assert [e.ref for e in upcoming.environments] == ["prod_eu", "prod_us"]
    history = {(h.step_id, h.status) for h in approval_request.execution_history}
    assert {("deploy_green", RunStatus.SUCCEEDED), ("smoke_test", RunStatus.SUCCEEDED)} <= history
    # The relay published exactly that on the real topic, keyed by the gate's natural key.
    record = await _published_on_topic(executor, APPROVAL_REQUESTS.name, approval_request.key.as_path())
    assert wire.decode(record.value, record.headers).data == approval_request

    # The scripts ran for real, with expressions and earlier outputs resolved.
    logs = await executor.logs(request.execution_id)
    assert (
        "deploying registry.example.com/shop/checkout:2.0.0 as green to shop on Staging"
        in logs[f"{STAGE}.deploy_green"]
    )
    assert "smoke testing https://green.staging.example.com" in logs[f"{STAGE}.smoke_test"]
    waiting = await executor.step(request.execution_id, f"{STAGE}.Harness_Approval_Step")
    assert waiting["status"] == "WAITING_APPROVAL"

    await executor.send(gate_approved(opened, {"foo": "baz"}))
    await executor.wait_step(request.execution_id, "production_rollout.roll_out.bake", "RUNNING")
    logs = await executor.logs(request.execution_id)
    assert logs[f"{STAGE}.echo_input"].strip() == "foo is baz"
    assert "routing Staging traffic to 2.0.0" in logs[f"{STAGE}.swap_primary"]

    # The 15 minute bake is a Wait on the executor's clock: move it, and the execution ends.
    executor.advance(timedelta(minutes=15))
    row = await executor.wait_status(request.execution_id, "SUCCEEDED")
    assert row["reason"] is None
    await executor.wait_for(wire.ExecutionSucceeded.event_type, request.execution_id)
    started = await executor.published(wire.ExecutionStarted.event_type, request.execution_id)
    assert [s.pipeline_name for s in started] == ["Checkout blue-green"]
    approved_step = await executor.wait_for(
        wire.ExecutionStepChanged.event_type,
        request.execution_id,
        where=lambda d: d.step_id == "Harness_Approval_Step" and d.status == RunStatus.SUCCEEDED,
    )
    assert approved_step.outputs == {"approverInputs.foo": "baz"} and approved_step.gate_id == opened.gate_id


def _gated_pipeline(message: str) -> str:
    return as_yaml(
        pipeline(
            deployment(
                "release",
                shell(
                    "build",
                    "echo building <+pipeline.variables.version>; VERSION=<+pipeline.variables.version>",
                    outputs=("version",),
                ),
                approval("approve", message=message),
                shell("after", "echo should not run"),
            ),
            variables=[{"name": "version", "type": "String", "value": "<+input>.default(1.0.0)"}],
        )
    )


async def test_the_message_is_resolved_up_to_the_approval_step_and_a_rejection_fails_the_pipeline(executor) -> None:
    message = (
        "<+pipeline.name> by <+pipeline.triggeredBy.name>: <+service.name> "
        "<+execution.steps.build.output.outputVariables.version> to <+env.name>/<+infra.name>; "
        "<+pipeline.variables.nope>"
    )
    request = execution_request(_gated_pipeline(message), pipeline_id="test_pipeline", variables={"version": "3.1"})
    approval_request, opened = await executor.run_to_gate(request)
    assert approval_request.message_template == message
    assert approval_request.message == (
        "Test pipeline by Alice: Checkout API 3.1 to Staging/Staging cluster; <+pipeline.variables.nope>"
    )

    await executor.send(
        wire.GateRejected(
            gate_id=opened.gate_id,
            key=opened.key,
            cause=RejectionCause.APPROVER,
            rejected_by="dana",
            comment="not today",
            rejected_at=START,
        )
    )
    row = await executor.wait_status(request.execution_id, "FAILED")
    assert "rejected by dana: not today" in row["reason"]
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, request.execution_id)
    assert failed.cause == FailureCause.APPROVAL_REJECTED and failed.step_id == "approve"
    assert (await executor.step(request.execution_id, "release.after"))["status"] == "SKIPPED"
    assert "release.after" not in await executor.logs(request.execution_id)


async def test_an_expired_gate_fails_the_pipeline(executor) -> None:
    request = execution_request(_gated_pipeline("ok?"), pipeline_id="test_pipeline")
    _, opened = await executor.run_to_gate(request)
    await executor.send(wire.GateExpired(gate_id=opened.gate_id, key=opened.key, expired_at=START + timedelta(days=1)))
    row = await executor.wait_status(request.execution_id, "FAILED")
    assert "expired" in row["reason"]
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, request.execution_id)
    assert failed.cause == FailureCause.APPROVAL_EXPIRED


async def test_a_started_pipeline_is_parsed_once_and_its_executions_load_that_parse(executor) -> None:
    # The start validates the document against the catalog; that parse (and its plan) is what the runner's and the
    # consumer's loads get from the role's definitions, for this execution and the next of the same definition.
    text = _gated_pipeline("ok?")
    first = execution_request(text, pipeline_id="test_pipeline")
    second = execution_request(text, pipeline_id="test_pipeline")
    for request in (first, second):
        # Reaching the gate took loads: the runner ran `build` and dispatched the approval; the consumer recorded
        # the gate on the loaded execution.
        await executor.run_to_gate(request)
    assert len(executor.definitions) == 1
    assert executor.definitions.parsed == 0
