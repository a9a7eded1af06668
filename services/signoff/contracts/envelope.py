"""CloudEvents 1.0 on Kafka: the envelope around every event, `encode` for producers and `decode` for consumers.

Producers write structured mode: the value is one JSON object with the CloudEvents attributes and `data`, with the
header `content-type: application/cloudevents+json`, and the W3C `traceparent` header. Consumers also accept binary
mode (attributes in `ce_*` headers, the value is the data JSON), which other CloudEvents SDKs default to.

`decode` never lets a bad message through and never crashes on one: it raises `ContractError`, whose `reason` the
consumer loop writes to the dead-letter topic (see `topics`).
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, create_model

from signoff.contracts.base import EventData, UtcDateTime, format_utc, parse_utc
from signoff.contracts.events import EVENT_TYPES

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
CONTENT_TYPE_HEADER = "content-type"
TRACEPARENT_HEADER = "traceparent"
BINARY_HEADER_PREFIX = "ce_"
MAX_EVENT_BYTES = 512 * 1024
"""The largest message value accepted, and produced: a gate request with a long history fits many times over, and
a runaway producer cannot make every consumer buffer megabytes."""

_TRACEPARENT = re.compile(r"^(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")
_MAX_ERRORS_SHOWN = 5


class ContractErrorReason(StrEnum):
    """Why a message was refused, short and machine-readable (the dead-letter `reason` header):

    - `malformed_json`: the value (or, in binary mode, the data) is not UTF-8 JSON.
    - `not_cloudevent`: no CloudEvents 1.0 envelope: not a JSON object, no or another `specversion`, or `id`,
      `source` or `type` missing.
    - `invalid_envelope`: a CloudEvent, but not ours: no or a bad `time`, a non-JSON `datacontenttype`, a
      non-string `subject`.
    - `unknown_type`: no model is registered for the `type`.
    - `invalid_data`: `data` does not validate against the model of its `type`.
    - `too_large`: the value is larger than the limit.
    """

    MALFORMED_JSON = "malformed_json"
    NOT_CLOUDEVENT = "not_cloudevent"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_DATA = "invalid_data"
    TOO_LARGE = "too_large"


class ContractError(ValueError):
    """A message that breaks the wire contract. `reason` is the machine-readable code, `str(error)` one line for a
    human; `event_id` and `event_type` are set when the envelope got that far (for logs)."""

    def __init__(
        self,
        reason: ContractErrorReason | str,
        message: str,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = ContractErrorReason(reason)
        self.message = message
        self.event_id = event_id
        self.event_type = event_type

    def __repr__(self) -> str:
        return f"ContractError({self.reason.value!r}, {self.message!r})"


D = TypeVar("D", bound=EventData)


@dataclass(frozen=True, slots=True)
class Event(Generic[D]):
    """One CloudEvent: the envelope attributes and the validated `data` model. `type` follows from the data."""

    id: str
    source: str
    subject: str
    time: datetime
    data: D
    traceparent: str | None = None
    received: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The data object as decoded from the message (JSON as the sender wrote it), for checks over what was sent
    (a decision's signature): kept for the types that are `checked_as_sent`, None otherwise and for an event built
    here."""

    specversion: ClassVar[str] = SPECVERSION
    datacontenttype: ClassVar[str] = DATA_CONTENT_TYPE

    def __post_init__(self) -> None:
        for name in ("id", "source", "subject"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"event {name} must be a non-empty string, not {value!r}")
        if not isinstance(self.data, EventData) or not hasattr(type(self.data), "event_type"):
            raise TypeError(f"event data must be a registered event model, not {type(self.data).__name__}")
        if self.traceparent is not None and not valid_traceparent(self.traceparent):
            raise ValueError(f"not a W3C traceparent: {self.traceparent!r}")
        # Through the same validator as data times: refuses naive datetimes, normalises to UTC.
        object.__setattr__(self, "time", parse_utc(self.time))

    @property
    def type(self) -> str:
        """The CloudEvents type, e.g. `io.signoff.approval.requested.v1`."""
        return self.data.event_type


def new_event(
    data: D,
    *,
    source: str,
    subject: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> Event[D]:
    """An event around `data`, ready for `encode` (or an outbox row).

    `source` names the producer (e.g. `urn:signoff:approval`); `subject` defaults to the data's gate or execution
    id; `id` to a random UUID; `time` to now. Pass the `traceparent` of the event that caused this one to keep the
    trace (it is forwarded unchanged, as W3C allows a participant that records no span of its own); without one a
    new trace starts.
    """
    return Event(
        id=id or str(uuid.uuid4()),
        source=source,
        subject=subject or data.default_subject(),
        time=time or datetime.now(UTC),
        data=data,
        traceparent=traceparent or new_traceparent(),
    )


def encode(event: Event[Any], *, max_bytes: int = MAX_EVENT_BYTES) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The Kafka value (structured-mode JSON) and headers of `event`. The same event always gives the same bytes.
    Raises ContractError(`too_large`) rather than produce what consumers would refuse."""
    document = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": format_utc(event.time),
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    # Null members are left out: every optional field defaults to null, so absent and null mean the same. The data
    # is serialised by pydantic-core straight to JSON (several times faster than a dict through json.dumps) and
    # spliced in as the last member.
    data = event.data.model_dump_json(exclude_none=True)
    envelope = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    value = f'{envelope[:-1]},"data":{data}}}'.encode()
    if len(value) > max_bytes:
        raise ContractError(
            ContractErrorReason.TOO_LARGE,
            f"{event.type} event {event.id} is {len(value)} bytes, more than the {max_bytes} allowed",
            event_id=event.id,
            event_type=event.type,
        )
    headers = [(CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode())]
    if event.traceparent:
        headers.append((TRACEPARENT_HEADER, event.traceparent.encode()))
    return value, headers


def decode(
    value: bytes | None, headers: Sequence[tuple[str, bytes]], *, max_bytes: int = MAX_EVENT_BYTES
) -> Event[EventData]:
    """The event in a Kafka message, structured or binary mode, its data validated against the model registered
    for its type. Unknown envelope attributes and unknown data fields are ignored (a newer producer may add them).
    Raises ContractError with the reason; an invalid `traceparent` is dropped, never a reason to refuse."""
    if value is None:
        raise ContractError(ContractErrorReason.NOT_CLOUDEVENT, "the message has no value (a tombstone)")
    if len(value) > max_bytes:
        raise ContractError(
            ContractErrorReason.TOO_LARGE, f"the message is {len(value)} bytes, more than the {max_bytes} allowed"
        )
    header_map = _header_map(headers)
    content_type = header_map.get(CONTENT_TYPE_HEADER, "")
    if content_type.lower().startswith("application/cloudevents-batch"):
        raise ContractError(ContractErrorReason.NOT_CLOUDEVENT, "CloudEvents batch mode is not supported")
    binary = f"{BINARY_HEADER_PREFIX}specversion" in header_map and not _is_structured(content_type)
    if _ESCAPED_NUL in value or (binary and any("\x00" in text for text in header_map.values())):
        _refuse_nul(value, header_map, binary)  # rare: the cheap test above keeps it off the common path
    if not binary:
        event = _structured_in_one_pass(value, header_map.get(TRACEPARENT_HEADER))
        if event is not None:
            return event
    attributes, data = _binary_mode(value, header_map) if binary else _structured_mode(value)
    traceparent = header_map.get(TRACEPARENT_HEADER) or attributes.get("traceparent")
    return _event(attributes, data, traceparent)


_ESCAPED_NUL = b"\\u0000"
"""How JSON writes a NUL character (the only way: a raw NUL byte is not JSON), in a string or in a key."""

NUL_PROBLEM = "contains a NUL character (\\u0000), which no text column can store"


def nul_field(document: Any, path: str = "") -> str | None:
    """The path (`comment`, `inputs.foo`, `items[2]`) of the first string or key in a JSON `document` that holds
    a NUL character, or None. PostgreSQL's text refuses NUL, so an event with one could never be applied: it is
    refused where it enters, naming the field, instead of failing in a handler's transaction."""
    if isinstance(document, str):
        return (path or "(value)") if "\x00" in document else None
    if isinstance(document, dict):
        for key, item in document.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            if (found := nul_field(item, here)) is not None:
                return found
    if isinstance(document, list):
        for index, item in enumerate(document):
            if (found := nul_field(item, f"{path}[{index}]")) is not None:
                return found
    return None


def model_nul_field(model: BaseModel) -> str | None:
    """`nul_field` of a model as it is serialised (the path by the JSON names); None for almost every model at
    the cost of one serialisation and one bytes search."""
    dumped = model.model_dump_json(by_alias=True)
    return nul_field(json.loads(dumped)) if _ESCAPED_NUL.decode() in dumped else None


def _refuse_nul(value: bytes, headers: Mapping[str, str], binary: bool) -> None:
    """Raise ContractError naming the attribute or data field of the message that holds a NUL, if one does (the
    escape may also be a backslash's, `\\\\u0000`, which is no NUL)."""
    if binary:
        for name, text in headers.items():
            if name.startswith(BINARY_HEADER_PREFIX) and "\x00" in text:
                raise ContractError(ContractErrorReason.INVALID_ENVELOPE, f"header {name} {NUL_PROBLEM}")
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return  # the full checks name this one
    if binary:
        document = {"data": document}
    field = nul_field(document)
    if field is None:
        return
    attributes = document if isinstance(document, dict) else {}
    reason = ContractErrorReason.INVALID_DATA if field.startswith("data") else ContractErrorReason.INVALID_ENVELOPE
    raise ContractError(
        reason,
        f"{field.removeprefix('data.')}: {NUL_PROBLEM}",
        event_id=_text(attributes.get("id")) if field != "id" else None,
        event_type=_text(attributes.get("type")) if field != "type" else None,
    )


def valid_traceparent(value: object) -> bool:
    """Whether `value` is a W3C traceparent this code can forward (version 00 layout, non-zero ids)."""
    if not isinstance(value, str):
        return False
    match = _TRACEPARENT.match(value)
    return match is not None and match["version"] != "ff" and match["trace"] != "0" * 32 and match["span"] != "0" * 16


def new_traceparent() -> str:
    """A traceparent that starts a new, sampled trace."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    # Header names are case-insensitive by convention; when a name repeats, the last one wins (as a later
    # header set by a relay overrides the original).
    result: dict[str, str] = {}
    for name, raw in headers:
        if raw is None:
            continue
        result[name.lower()] = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
    return result


def _is_structured(content_type: str) -> bool:
    return content_type.lower().startswith(STRUCTURED_CONTENT_TYPE)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


def _loads(value: bytes, what: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ContractError(ContractErrorReason.MALFORMED_JSON, f"{what} is not valid UTF-8 JSON: {exc}") from None


_NonEmptyText = Annotated[str, StringConstraints(min_length=1)]


class _Envelope(BaseModel):
    """A structured-mode CloudEvent as this service writes one: what `_event` accepts, stated as a model, so the
    common case is validated by pydantic-core from the bytes in one pass (no JSON document in Python first)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"]
    id: _NonEmptyText
    source: _NonEmptyText
    subject: _NonEmptyText | None = None
    time: UtcDateTime
    datacontenttype: Literal["application/json"] | None = None
    traceparent: Any = None


@functools.cache
def _envelopes() -> TypeAdapter[_Envelope]:
    # Built on first use (a CLI that never decodes does not pay for it). Types whose checks read the data as sent
    # (`checked_as_sent`) are left out: they take the full checks, whose model and `received` come from one decoded
    # document (two parsers need not agree on a repeated member, and a signature must cover what is applied).
    models = [
        create_model(
            f"{model.__name__}Envelope",
            __base__=_Envelope,
            type=(Literal[model.event_type], ...),  # type: ignore[valid-type]
            data=(model, ...),
        )
        for model in EVENT_TYPES.values()
        if not model.checked_as_sent
    ]
    return TypeAdapter(Annotated[Union[tuple(models)], Field(discriminator="type")])  # noqa: UP007


@functools.cache
def _checked_as_sent_markers() -> tuple[bytes, ...]:
    return tuple(json.dumps(model.event_type).encode() for model in EVENT_TYPES.values() if model.checked_as_sent)


def _structured_in_one_pass(value: bytes, traceparent_header: str | None) -> Event[EventData] | None:
    """The event, when `value` is a valid structured-mode event of a type that need not keep its document; None
    otherwise, and the full checks of `decode` decide (they name the reason, and accept what this stricter pass
    leaves to them: another JSON content type, a decision)."""
    if any(marker in value for marker in _checked_as_sent_markers()):
        return None  # most likely a decision: spare it a pass that would fail (a false hit only costs that pass)
    try:
        envelope = _envelopes().validate_json(value, extra="ignore")
    except ValidationError:
        return None
    traceparent = traceparent_header or envelope.traceparent
    return Event(
        id=envelope.id,
        source=envelope.source,
        subject=envelope.subject or envelope.data.default_subject(),
        time=envelope.time,
        data=envelope.data,
        traceparent=traceparent if valid_traceparent(traceparent) else None,
    )


def _structured_mode(value: bytes) -> tuple[Mapping[str, Any], Any]:
    document = _loads(value, "the message value")
    if not isinstance(document, dict):
        raise ContractError(
            ContractErrorReason.NOT_CLOUDEVENT,
            f"a structured CloudEvent is a JSON object, not {type(document).__name__}",
        )
    if "data" not in document and "data_base64" in document:
        raise ContractError(
            ContractErrorReason.INVALID_DATA,
            "data_base64 is not supported: data must be a JSON object",
            event_id=_text(document.get("id")),
            event_type=_text(document.get("type")),
        )
    return document, document.get("data")


def _binary_mode(value: bytes, headers: Mapping[str, str]) -> tuple[Mapping[str, Any], Any]:
    attributes: dict[str, Any] = {
        name.removeprefix(BINARY_HEADER_PREFIX): text
        for name, text in headers.items()
        if name.startswith(BINARY_HEADER_PREFIX)
    }
    # In binary mode the content-type header is the datacontenttype.
    if CONTENT_TYPE_HEADER in headers:
        attributes["datacontenttype"] = headers[CONTENT_TYPE_HEADER]
    return attributes, _loads(value, "the binary-mode data")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _event(attributes: Mapping[str, Any], data: Any, traceparent: object) -> Event[EventData]:
    specversion = attributes.get("specversion")
    if specversion != SPECVERSION:
        detail = "no specversion" if specversion is None else f"specversion {specversion!r} is not supported"
        raise ContractError(ContractErrorReason.NOT_CLOUDEVENT, f"not a CloudEvents 1.0 event: {detail}")
    missing = [name for name in ("id", "source", "type") if _text(attributes.get(name)) is None]
    if missing:
        raise ContractError(
            ContractErrorReason.NOT_CLOUDEVENT,
            f"not a CloudEvent: {', '.join(missing)} missing or not a non-empty string",
        )
    event_id, event_type = attributes["id"], attributes["type"]

    def refuse(reason: ContractErrorReason, message: str) -> ContractError:
        return ContractError(
            reason, f"{event_type} event {event_id}: {message}", event_id=event_id, event_type=event_type
        )

    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise refuse(ContractErrorReason.UNKNOWN_TYPE, "unknown event type")
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not (isinstance(content_type, str) and _is_json(content_type)):
        raise refuse(ContractErrorReason.INVALID_ENVELOPE, f"datacontenttype {content_type!r} is not JSON")
    subject = attributes.get("subject")
    if subject is not None and _text(subject) is None:
        raise refuse(ContractErrorReason.INVALID_ENVELOPE, "subject must be a non-empty string")
    if "time" not in attributes:
        raise refuse(ContractErrorReason.INVALID_ENVELOPE, "time is missing")
    try:
        time = parse_utc(attributes["time"])
    except ValidationError:
        raise refuse(
            ContractErrorReason.INVALID_ENVELOPE,
            f"time {attributes['time']!r} is not an ISO 8601 timestamp with an offset",
        ) from None
    if not isinstance(data, dict):
        raise refuse(ContractErrorReason.INVALID_DATA, f"data must be a JSON object, not {type(data).__name__}")
    try:
        model_data = model.model_validate(data, extra="ignore")
    except ValidationError as exc:
        raise refuse(ContractErrorReason.INVALID_DATA, _summarise(exc)) from None
    return Event(
        id=event_id,
        source=attributes["source"],
        subject=subject or model_data.default_subject(),
        time=time,
        data=model_data,
        traceparent=traceparent if valid_traceparent(traceparent) else None,
        received=data if model.checked_as_sent else None,
    )


def _summarise(error: ValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False)
    shown = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'data'}: {problem['msg']}"
        for problem in problems[:_MAX_ERRORS_SHOWN]
    ]
    more = len(problems) - len(shown)
    return "invalid data: " + "; ".join(shown) + (f" (and {more} more)" if more else "")
