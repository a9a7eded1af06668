"""One trace per pipeline run, across the separate role processes: the dev stack's roles export their spans over
OTLP/HTTP (protobuf) to a collector stand-in served by this test, and the seed journey (run, approval request,
gate, decision through the api, outcome, next step, webhook) is found there as spans of one trace id."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.e2e.conftest import SEED_DECISION, System, running_system
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

APPROVED = "io.signoff.gate.approved.v1"


@dataclass(frozen=True)
class ExportedSpan:
    """A span as the collector received it."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, object]
    linked_traces: tuple[str, ...]


def _value(value: AnyValue) -> object:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


@dataclass
class Collector:
    """An OTLP/HTTP collector stand-in: POST /v1/traces, an ExportTraceServiceRequest in protobuf."""

    spans: list[ExportedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf", request.content_type
        exported = ExportTraceServiceRequest()
        exported.ParseFromString(body)
        received = []
        for resource_spans in exported.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ExportedSpan(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            linked_traces=tuple(link.trace_id.hex() for link in span.links),
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def named(self, service: str, name: str) -> list[ExportedSpan]:
        with self.lock:
            return [span for span in self.spans if span.service == service and span.name == name]


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    """The collector, served by aiohttp on an event loop of its own thread (the journey's CLI calls block)."""
    collector = Collector()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.export)
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        collector.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield collector
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def traced_system(collector: Collector) -> Iterator[System]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the collector soon after they end
    }
    with running_system(env=env) as system:
        yield system


def test_the_seed_journey_is_one_trace_across_the_roles(traced_system: System, collector: Collector) -> None:
    system = traced_system
    path = system.pipeline(
        "traced",
        renames={
            "checkout_blue_green": "MyFirstPipeline",
            "staging_blue_green": "MyApprovalStage",
            "Harness_Approval_Step": "MyApprovalAction",
        },
    )
    execution_id = system.signoff("run", str(path), "--var", "tag=2.0.0").stdout.strip()
    waiting = system.waiting_approval("MyFirstPipeline")
    gate_id = waiting["externalExecutionId"]
    decision = system.work / "approvalstage-approved.json"
    decision.write_text(json.dumps(SEED_DECISION | {"token": waiting["token"]}))
    answered = system.signoff("put-approval-result", "--cli-input-json", f"file://{decision}", user="dana")
    assert "gate is now approved" in answered.stdout, answered.stdout
    system.wait_status(execution_id, "SUCCEEDED")
    (approved,) = eventually_sync(
        lambda: system.sink.of_gate(gate_id, APPROVED), timeout=90, what="the approval's webhook at the sink"
    )

    # The run's trace starts at the api call that requested it (FastAPI's own SERVER span of the request).
    (started,) = eventually_sync(
        lambda: collector.named("signoff-api", "POST /api/v1/executions"), timeout=60, what="the api's run span"
    )
    trace_id = started.trace_id
    assert started.kind == 2 and started.attributes["http.response.status_code"] == 201  # SERVER

    def consumed(service: str, event_type: str) -> list[ExportedSpan]:
        return [
            span
            for span in collector.of_trace(trace_id)
            if span.service == service and span.name == f"process {event_type}" and span.kind == 5  # CONSUMER
        ]

    # Each step of the journey, in the process that did it, continues that one trace.
    expected = {
        "the executor starts the run": lambda: consumed("signoff-executor", "io.signoff.execution.requested.v1"),
        "the runner requests the approval": lambda: [
            s
            for s in collector.of_trace(trace_id)
            if s.service == "signoff-executor"
            and s.name == "executor advance"
            and s.attributes.get("signoff.execution_id") == execution_id
        ],
        "the approval service opens the gate": lambda: consumed("signoff-approval", "io.signoff.approval.requested.v1"),
        "the notifier plans the gate's notices": lambda: consumed("signoff-notifier", "io.signoff.gate.opened.v1"),
        "the executor learns the gate": lambda: consumed("signoff-executor", "io.signoff.gate.opened.v1"),
        "the api sends dana's decision": lambda: [
            s
            for s in collector.of_trace(trace_id)
            if s.service == "signoff-api" and s.name == "api decide" and s.attributes.get("signoff.gate_id") == gate_id
        ],
        "the approval service counts it": lambda: consumed("signoff-approval", "io.signoff.approval.decision.v1"),
        "the executor resumes on the outcome": lambda: consumed("signoff-executor", APPROVED),
        "the notifier plans the outcome's notices": lambda: consumed("signoff-notifier", APPROVED),
        "the next step's script runs": lambda: [
            s
            for s in collector.of_trace(trace_id)
            if s.service == "signoff-executor" and "echo_input" in str(s.attributes.get("signoff.step_path"))
        ],
        "the webhook is sent": lambda: [
            s
            for s in collector.of_trace(trace_id)
            if s.service == "signoff-notifier" and s.name == "notifier send team-hook" and s.kind == 3  # CLIENT
        ],
    }
    for what, found in expected.items():
        eventually_sync(found, timeout=60, what=f"a span of trace {trace_id}: {what}")

    # The decision's span is in the gate's trace, and links the trace of the HTTP request that carried it (the
    # CLI sent no traceparent: that request's server span started a trace of its own).
    (decide,) = [s for s in collector.of_trace(trace_id) if s.name == "api decide"]
    assert decide.linked_traces and trace_id not in decide.linked_traces
    with collector.lock:
        callers = [s for s in collector.spans if s.service == "signoff-api" and s.trace_id in decide.linked_traces]
    assert any(s.kind == 2 for s in callers), callers  # the put-approval-result request's SERVER span

    # The next step's script runs under the runner pass that started it, which continues the run's trace.
    spans = collector.of_trace(trace_id)
    advances = {s.span_id for s in spans if s.name == "executor advance"}
    (script,) = [s for s in spans if s.attributes.get("signoff.step_path") == "MyApprovalStage.echo_input"]
    assert script.name == "executor script MyApprovalStage.echo_input" and script.parent_span_id in advances

    # Spans of one process have parents in another: the trace crosses the roles through the events' traceparent.
    services = {span.service for span in collector.of_trace(trace_id)}
    assert services == {"signoff-api", "signoff-executor", "signoff-approval", "signoff-notifier"}, services
    # The webhook request itself carries the trace: the traceparent of the span that sent it.
    _, header_trace, header_span, _ = approved.traceparent.split("-")
    sends = [s.span_id for s in collector.of_trace(trace_id) if s.name == "notifier send team-hook"]
    assert header_trace == trace_id and header_span in sends, (approved.traceparent, sends)
