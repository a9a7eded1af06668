"""structlog set-up: console output on a terminal, one JSON object per line otherwise.

Per-message context (event id, gate / execution id, topic, partition, offset) is bound with
`structlog.contextvars.bound_contextvars` by the consumer loop, and merged first into every line.
Log lines from libraries (aiokafka, asyncpg) go through the same renderer. With tracing on (runtime/tracing.py), a
line logged under a span carries its `trace_id` and `span_id`.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import TextIO

import structlog

from signoff.runtime.tracing import log_ids

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info", fmt: str = "auto", *, role: str | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger once per process. Logs go to `stream` (stdout, where a
    container's logs are collected; a command whose stdout is its result logs to stderr)."""
    stream = stream or sys.stdout
    json_output = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # trace_id / span_id of the current span, when tracing is on (a no-op otherwise).
        log_ids,
    ]
    if role:
        shared.append(_add_role(role))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else MultilineConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at INFO (aiokafka logs every rebalance step); keep them at WARNING unless debugging.
    root.setLevel(_LEVELS[level] if level == "debug" else logging.WARNING)


class MultilineConsoleRenderer:
    """structlog's console renderer, with multi-line text values (a notification the dev stack prints) written
    below the line, indented, instead of as one long repr full of `\\n` escapes."""

    # The event name stays on the line; the console renderer prints a traceback or stack below it already.
    _KEPT = frozenset({"event", "exception", "stack"})

    def __init__(self) -> None:
        self._line = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: object, name: str, event: dict) -> str:
        multiline = [k for k, v in event.items() if isinstance(v, str) and "\n" in v and k not in self._KEPT]
        blocks = {key: event.pop(key) for key in multiline}
        rendered = self._line(logger, name, event)
        for key, text in blocks.items():
            rendered += f"\n  {key}:\n" + textwrap.indent(text.rstrip("\n"), "    ")
        return rendered


def _add_role(role: str) -> structlog.types.Processor:
    def add_role(_logger: object, _name: str, event: dict) -> dict:
        event.setdefault("role", role)
        return event

    return add_role
