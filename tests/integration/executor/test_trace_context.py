"""Tracing off, the run's trace id is still one: the traceparent of ExecutionRequested is kept with the execution,
and what the runner publishes later (step changes, the approval request) forwards it, as the handler's events do."""

from __future__ import annotations

import pytest

from signoff import contracts as wire
from signoff.runtime import tracing
from signoff.runtime.outbox import headers_from_json
from tests.integration.executor.conftest import EXAMPLE, execution_request

pytestmark = pytest.mark.integration


async def test_every_event_of_the_run_forwards_the_traceparent_of_its_request(executor) -> None:
    assert not tracing.enabled()
    request = execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green", variables={"tag": "2.0.0"})
    sent = await executor.send(request)
    await executor.wait_for(wire.ApprovalRequested.event_type, request.execution_id)

    assert (await executor.execution(request.execution_id))["traceparent"] == sent.traceparent
    carried: dict[str, set[str]] = {}
    for row in await executor.outbox():
        event = wire.decode(bytes(row["payload"]), headers_from_json(row["headers"]))
        data = event.data
        about = data.key.execution_id if hasattr(data, "key") else getattr(data, "execution_id", None)
        if about == request.execution_id:
            carried.setdefault(event.type, set()).add(event.traceparent)
    # The handler's ExecutionStarted, the runner's step changes (scripts reported by the runner too) and its
    # approval request: all of them the request's traceparent, none a trace of its own.
    assert {
        wire.ExecutionStarted.event_type,
        wire.ExecutionStepChanged.event_type,
        wire.ApprovalRequested.event_type,
    } <= carried.keys()
    assert set().union(*carried.values()) == {sent.traceparent}, carried
