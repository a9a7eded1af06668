"""A pipeline whose YAML escapes text PostgreSQL cannot store (a NUL character, a lone surrogate) is refused by the
executor like any invalid pipeline: dead-lettered as invalid_pipeline naming the path, an ExecutionFailed for
waiters, a refusal row; never a handler error on the database write. The role goes on consuming."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from signoff import contracts as wire
from signoff.contracts.topics import DEAD_LETTER_TOPIC
from signoff.executor.handlers import ExecutorHandler
from signoff.executor.mapping import MESSAGE_MAX
from signoff.executor.repository import ExecutorRepository
from signoff.runtime.consumer import Received, UnitOfWork
from signoff.runtime.outbox import MAIN_LANE, OutboxWriter, headers_from_json
from tests.integration.executor.conftest import execution_request
from tests.support.waiting import eventually
from tests.unit.executor.builders import approval, as_yaml, pipeline, shell, stage

pytestmark = pytest.mark.integration

MESSAGE = "pipeline.stages[0].stage.spec.execution.steps[0].step.spec.approvalMessage"


async def _dead_letter(executor, execution_id: str) -> dict[str, str] | None:
    """The signoff-dlq-* headers of the dead-lettered request of `execution_id`, once there is one."""
    for row in await executor.outbox():
        if row["aggregatetype"] != DEAD_LETTER_TOPIC:
            continue
        event = wire.decode(bytes(row["payload"]), [("content-type", b"application/cloudevents+json")])
        if event.data.execution_id == execution_id:
            return {name: value.decode() for name, value in headers_from_json(row["headers"])}
    return None


def test_a_raw_nul_in_pipeline_yaml_is_refused_by_the_contract_already() -> None:
    # Only a YAML escape (`"\0"`, plain ASCII in the event) gets a NUL past the contract to the executor.
    request = execution_request('pipeline: "x\x00"', pipeline_id="test_pipeline")
    value, headers = wire.encode(wire.new_event(request, source="urn:signoff:test"))
    with pytest.raises(wire.ContractError, match="pipeline_yaml: contains a NUL character"):
        wire.decode(value, headers)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("nul\0here", "contains a NUL character"),
        ("sur\ud800rogate", "contains a lone surrogate (\\ud800), not valid Unicode text"),
    ],
    ids=["nul", "lone-surrogate"],
)
async def test_a_yaml_escape_of_unstorable_text_is_refused_as_an_invalid_pipeline(
    executor, message: str, problem: str
) -> None:
    text = as_yaml(pipeline(stage("s", approval(message=message))))
    assert '"nul\\0here"' in text or '"sur\\uD800rogate"' in text  # an escape: the event itself is valid
    bad = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(bad)

    letter = await eventually(lambda: _dead_letter(executor, bad.execution_id), timeout=30, what="a dead letter")
    assert letter["signoff-dlq-reason"] == "invalid_pipeline"
    assert f"{MESSAGE}: {problem}" in letter["signoff-dlq-error"]
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, bad.execution_id)
    assert failed.cause == "invalid_pipeline" and f"{MESSAGE}: {problem}" in failed.error
    async with executor.pool.acquire() as conn:
        refusal = await ExecutorRepository().refusal(conn, bad.execution_id)
    assert refusal["reason"] == "invalid_pipeline" and f"{MESSAGE}: {problem}" in refusal["error"]
    assert await executor.execution(bad.execution_id) is None

    # The role was not stuck on it: the next request runs.
    good = execution_request(as_yaml(pipeline(stage("s", shell("a", "echo ok")))), pipeline_id="test_pipeline")
    await executor.send(good)
    await executor.wait_status(good.execution_id, "SUCCEEDED")


async def test_a_start_the_executor_gives_up_on_is_recorded_as_refused_so_run_wait_ends(executor) -> None:
    """What the consumer loop calls (GivingUp) for a start request `apply` keeps failing on, in the dead letter's
    transaction: the refusal `signoff run --wait` reads, and an ExecutionFailed for subscribers."""
    request = execution_request(as_yaml(pipeline(stage("s", shell("a", "echo ok")))), pipeline_id="test_pipeline")
    event = wire.new_event(request, source="urn:signoff:test")
    record = ConsumerRecord(executor.requests, 0, 7, 0, 0, b"k", b"", None, 0, 0, [])
    async with executor.pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn, OutboxWriter("executor", MAIN_LANE))
        await ExecutorHandler().gave_up(uow, Received(event, record), "DataError: value out of int32 range")
        await uow.outbox.flush(conn)
    async with executor.pool.acquire() as conn:
        refusal = await ExecutorRepository().refusal(conn, request.execution_id)
    assert refusal["reason"] == "handler_error"
    assert refusal["error"] == "the executor could not start it (DataError); it is on the dead-letter topic"
    failed = await executor.wait_for(wire.ExecutionFailed.event_type, request.execution_id)
    assert failed.cause == "invalid_pipeline" and "could not start it (DataError)" in failed.error


async def test_a_message_over_the_wire_limit_once_resolved_is_cut_and_marked_and_the_gate_opens(executor) -> None:
    """Written, the message fits (1,000 references to a variable); resolved, it is 100,000 characters. The run
    reaches its approval with the message cut and marked, instead of failing halfway (ValidationError)."""
    variable = [{"name": "v", "type": "String", "value": "v" * 100}]
    message = " ".join(["<+pipeline.variables.v>"] * 1000)
    document = pipeline(stage("s", approval(message=message)), variables=variable)
    request = execution_request(as_yaml(document), pipeline_id="test_pipeline")
    approval_request, _ = await executor.run_to_gate(request)
    assert approval_request.message_template == message  # as written: under the limit
    assert len(approval_request.message) == MESSAGE_MAX
    assert approval_request.message.startswith("v" * 100 + " ")
    assert approval_request.message.endswith(f"[…] (cut: the message is over {MESSAGE_MAX} characters)")
