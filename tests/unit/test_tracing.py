"""runtime/tracing.py: when the OTEL_* variables turn tracing on, and what the helpers do off and on (on: a real SDK
tracer whose spans land in the SDK's in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from signoff.runtime import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(environ: dict[str, str], on: bool) -> None:
    assert tracing.tracing_configured(environ) is on


def test_an_exporter_or_protocol_it_cannot_honour_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.tracing_configured({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ValueError, match="http/protobuf only"):
        tracing.configure_tracing("approval", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert not tracing.enabled()


def test_off_nothing_is_recorded_and_the_stored_traceparent_is_forwarded() -> None:
    assert not tracing.enabled()
    with tracing.span("anything", parent=PARENT) as span:
        assert span is None
        assert tracing.current_traceparent(PARENT) == PARENT
        assert tracing.current_traceparent() is None
    assert tracing.log_ids(None, "info", {"event": "x"}) == {"event": "x"}


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_a_span_continues_the_stored_trace_and_what_it_sends_carries_it(spans: InMemorySpanExporter) -> None:
    with tracing.span("executor advance", parent=PARENT, links=(OTHER,), attributes={"signoff.execution_id": "e1"}):
        sent = tracing.current_traceparent(PARENT)
        line = tracing.log_ids(None, "info", {"event": "x"})
    (span,) = spans.get_finished_spans()
    assert span.context.trace_id == int(PARENT.split("-")[1], 16)
    assert span.parent is not None and span.parent.span_id == int(PARENT.split("-")[2], 16)
    assert sent == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    assert line["trace_id"] == f"{span.context.trace_id:032x}" and line["span_id"] == f"{span.context.span_id:016x}"
    assert [link.context.trace_id for link in span.links] == [int(OTHER.split("-")[1], 16)]
    assert span.attributes["signoff.execution_id"] == "e1"


def test_without_a_parent_a_span_starts_a_trace_of_its_own(spans: InMemorySpanExporter) -> None:
    with tracing.span("notifier reminder", parent=None):
        pass
    (span,) = spans.get_finished_spans()
    assert span.parent is None and span.context.trace_id != int(PARENT.split("-")[1], 16)


def test_a_consumer_span_is_not_current_and_records_the_error_it_ends_with(spans: InMemorySpanExporter) -> None:
    span = tracing.start_consumer_span("process io.signoff.gate.opened.v1", PARENT, {"cloudevents.event_id": "1"})
    assert tracing.current_traceparent() is None  # a batch is processed at once: no span of it is current
    with tracing.use_span(span):
        assert tracing.current_traceparent() == tracing.traceparent_of(span)
    tracing.end_span(span, RuntimeError("boom"))
    (finished,) = spans.get_finished_spans()
    assert finished.kind == SpanKind.CONSUMER and finished.context.trace_id == int(PARENT.split("-")[1], 16)
    assert finished.status.description == "RuntimeError: boom"
    assert [event.name for event in finished.events] == ["exception"]
