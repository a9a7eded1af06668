"""OpenTelemetry tracing: one trace per execution, across every role, off unless configured.

Configured only by the standard `OTEL_*` environment variables (README.md, "Tracing"). Tracing is on
when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off. Spans
go to an OTLP/HTTP (protobuf) collector through a batch processor; endpoint, headers, timeout, sampler, batch
delays and resource attributes are the SDK's own `OTEL_*` variables. `service.name` is `signoff-<role>` unless
`OTEL_SERVICE_NAME` says otherwise.

Off, no SDK is imported, no tracer provider is installed and every helper here is one check of a module flag: the
event path pays nothing. The W3C `traceparent` of each event is still forwarded unchanged, so the events of one
run share a trace id either way.

The trace of a run lives in the events' `traceparent` and in what is stored with the execution, the gate and the
notifier's gate (their `traceparent` columns): a consumer span continues the incoming event's trace
(`consumer_span`), a background loop continues the stored one (`span`), and the events and requests sent under
a span carry that span (`current_traceparent`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from signoff.contracts.envelope import valid_traceparent

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_SUPPORTED_PROTOCOLS = ("http/protobuf", "")
_tracer: Tracer | None = None
_provider: Any = None


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the `OTEL_*` variables ask for trace export (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()}
    if exporters:
        unsupported = exporters - {"otlp", "none"}
        if unsupported:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: signoff exports traces with otlp only"
            )
        return "otlp" in exporters
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    """Whether this process records spans."""
    return _tracer is not None


def configure_tracing(role: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the tracer provider of role `role` when the environment asks for tracing; returns whether it did.
    Raises ValueError (a one-line reason) for a configuration it cannot honour (an exporter or protocol other
    than OTLP over HTTP/protobuf), so the role refuses to start rather than silently drop its spans."""
    global _tracer, _provider
    env = os.environ if environ is None else environ
    if _tracer is not None or not tracing_configured(env):
        return _tracer is not None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol.strip().lower() not in _SUPPORTED_PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: signoff exports traces over http/protobuf only")
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from signoff import __version__

    attributes = {"service.version": __version__, "service.namespace": "signoff"}
    if not env.get("OTEL_SERVICE_NAME"):
        # Resource.create lets explicit attributes win over OTEL_SERVICE_NAME: name the role only when it is unset.
        attributes["service.name"] = f"signoff-{role}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = trace.get_tracer("signoff", __version__)
    return True


@contextlib.contextmanager
def traced(role: str) -> Iterator[None]:
    """Around a role process's run: tracing configured from the environment (a configuration it cannot honour
    ends the process with a one-line error), and the buffered spans exported at the end."""
    try:
        configure_tracing(role)
    except ValueError as exc:
        raise SystemExit(f"signoff {role}: {exc}") from None
    try:
        yield
    finally:
        shutdown_tracing()


def shutdown_tracing() -> None:
    """Export what is buffered and stop (a role's last step): spans of the final batch are not lost."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def _parent(traceparent: str | None) -> Any:
    """The context whose remote parent is `traceparent`; an empty context (a new trace) without a valid one."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if traceparent is None or not valid_traceparent(traceparent):
        return Context()
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent}, context=Context())


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span` as the parent (what an event sent under it carries)."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent(fallback: str | None = None) -> str | None:
    """The traceparent of the current span when tracing is on and a span is current, else `fallback` (the stored
    or incoming traceparent, forwarded unchanged)."""
    if _tracer is None:
        return fallback
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return fallback
    return traceparent_of(span)


def start_consumer_span(name: str, traceparent: str | None, attributes: Mapping[str, Any]) -> Span:
    """A CONSUMER span continuing `traceparent` (a new trace without one), started now and not made current: a
    batch of events is processed at once, each under a span of its own. The caller ends it."""
    from opentelemetry.trace import SpanKind

    assert _tracer is not None, "start_consumer_span is only called when tracing is enabled"
    return _tracer.start_span(name, context=_parent(traceparent), kind=SpanKind.CONSUMER, attributes=attributes)


@contextlib.contextmanager
def use_span(span: Span | None) -> Iterator[None]:
    """Make `span` current in the block (None: nothing), without ending it."""
    if span is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    links: tuple[str | None, ...] = (),
) -> Iterator[Span | None]:
    """A current span around the block, continuing `parent` (a stored or incoming traceparent; a new trace without
    one), `links` to other traceparents (e.g. the HTTP caller's trace); yields None when tracing is off. An error
    leaving the block is recorded on the span and re-raised."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import Link, SpanKind

    span_links = [Link(_span_context(link)) for link in links if link is not None and valid_traceparent(link)]
    with _tracer.start_as_current_span(
        name,
        context=_parent(parent),
        kind=SpanKind[kind.upper()],
        attributes=dict(attributes or {}),
        links=span_links,
    ) as current:
        yield current


def end_span(span: Span, error: BaseException | None = None) -> None:
    """End a span started with start_consumer_span, marking it failed with `error`."""
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
    span.end()


def _span_context(traceparent: str) -> Any:
    from opentelemetry import trace

    return trace.get_current_span(_parent(traceparent)).get_span_context()


def log_ids(_logger: object, _name: str, event: dict) -> dict:
    """structlog processor: the current span's `trace_id` and `span_id` on every line logged under a span."""
    if _tracer is None:
        return event
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event
