"""Generate `schemas/` from the contracts: one JSON Schema 2020-12 per event type (the structured CloudEvent with its
`data`) and one AsyncAPI 3.0 document of the topics.

Output is byte-identical on every run (sorted keys, fixed formatting, trailing newline), so CI can compare the
committed files with a fresh generation and fail on drift.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml

from signoff.contracts.base import EventData
from signoff.contracts.cdevents import CDEVENT_TYPES, CDEVENTS_SPECVERSION
from signoff.contracts.envelope import (
    CONTENT_TYPE_HEADER,
    DATA_CONTENT_TYPE,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    TRACEPARENT_HEADER,
)
from signoff.contracts.events import EVENT_MODELS, EVENT_TYPES
from signoff.contracts.topics import DEAD_LETTER, DLQ_HEADERS, TOPICS, Topic

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URI = "https://signoff.io/schemas/"
ASYNCAPI_FILE = "asyncapi.yaml"
OPENAPI_FILE = "openapi.json"
CONTRACT_VERSION = "1.0.0"
"""Version of the contract as a whole (the AsyncAPI `info.version`); topic and type names carry the major."""

_KAFKA_BINDING_VERSION = "0.5.0"
_GENERATED = re.compile(r"^io\.signoff\..+\.json$")
_TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


def schema_file(event_type: str) -> str:
    """File name of the JSON Schema of `event_type` inside `schemas/`."""
    return f"{event_type}.json"


def event_schema(model: type[EventData]) -> dict[str, Any]:
    """The JSON Schema of a structured-mode CloudEvent whose data is `model`."""
    data = model.model_json_schema(mode="serialization", by_alias=False, ref_template="#/$defs/{model}")
    definitions = data.pop("$defs", {})
    definitions[model.__name__] = data
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_BASE_URI + schema_file(model.event_type),
        "title": f"{model.__name__} ({model.event_type})",
        "description": f"A CloudEvents {SPECVERSION} event in structured mode whose data is {model.__name__}. "
        "Producers write exactly these members; consumers ignore members they do not know.\n\n" + _doc(model),
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": SPECVERSION, "description": "CloudEvents version."},
            "id": {"type": "string", "minLength": 1, "description": "Unique event id; consumers dedupe on it."},
            "source": {
                "type": "string",
                "minLength": 1,
                "format": "uri-reference",
                "description": "The producer, e.g. `urn:signoff:approval`.",
            },
            "type": {"const": model.event_type, "description": "CloudEvents type."},
            "subject": {
                "type": "string",
                "minLength": 1,
                "description": "The gate or execution id the event is about (see the data description).",
            },
            "time": {"type": "string", "format": "date-time", "description": "When it happened, UTC ISO 8601."},
            "datacontenttype": {"const": DATA_CONTENT_TYPE, "description": "Media type of data."},
            "data": {"$ref": f"#/$defs/{model.__name__}"},
        },
        "$defs": definitions,
    }


def message_name(event_type: str) -> str:
    """The AsyncAPI message name of `event_type`: its model's name, or for a CDEvent `ApprovalCreatedCDEvent` ..."""
    if event_type in CDEVENT_TYPES:
        subject, predicate = event_type.split(".")[2:4]
        return f"{subject.title()}{predicate.title()}CDEvent"
    return EVENT_TYPES[event_type].__name__


def operation_id(role: str, action: str, topic: Topic) -> str:
    """The AsyncAPI operation id of `role` sending to / receiving from `topic`: `approval-send-signoff.approval...`."""
    return f"{role}-{action}-{topic.name}"


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: one channel per topic, one message per event type, and one operation per role
    that sends to or receives from a channel (`Topic.senders`, `Topic.receivers`)."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in TOPICS:
        names = [message_name(event_type) for event_type in topic.event_types] or ["DeadLetter"]
        channels[topic.name] = {
            "address": topic.name,
            "description": f"{topic.description}\n\nMessage key: {topic.key}",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {"kafka": {"topic": topic.name, "bindingVersion": _KAFKA_BINDING_VERSION}},
        }
        for event_type in topic.event_types:
            if event_type in CDEVENT_TYPES:
                messages[message_name(event_type)] = _cdevent_message(event_type, topic)
            else:
                model = EVENT_TYPES[event_type]
                messages[model.__name__] = _event_message(model, topic)
        for action, roles in (("send", topic.senders), ("receive", topic.receivers)):
            for role in roles:
                operations[operation_id(role, action, topic)] = _operation(role, action, topic, names)
    messages["DeadLetter"] = _dead_letter_message()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "signoff",
            "version": CONTRACT_VERSION,
            "description": "Event-driven approval gates for CD pipelines. Every message value is a CloudEvents "
            f"{SPECVERSION} event in structured mode (`{CONTENT_TYPE_HEADER}: {STRUCTURED_CONTENT_TYPE}`); "
            "consumers also accept binary mode (`ce_*` headers). The W3C `traceparent` travels as a header.",
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _operation(role: str, action: str, topic: Topic, names: list[str]) -> dict[str, Any]:
    verb = "publishes to" if action == "send" else "consumes"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{topic.name}"},
        "title": f"The {role} role {verb} {topic.name}",
        # Outside systems that publish or consume too are named in the channel's description.
        "summary": f"The signoff {role} role {verb} {topic.name}.",
        "tags": [{"name": f"role:{role}", "description": f"An operation of the signoff {role} role."}],
        "messages": [{"$ref": f"#/channels/{topic.name}/messages/{name}"} for name in names],
    }


def render() -> dict[str, str]:
    """Every generated file: name inside `schemas/` -> exact content."""
    files = {schema_file(model.event_type): _json(event_schema(model)) for model in EVENT_MODELS}
    files[ASYNCAPI_FILE] = yaml.dump(
        asyncapi_document(),
        Dumper=_Dumper,
        sort_keys=True,
        allow_unicode=True,
        default_flow_style=False,
        width=120,
    )
    # The api's HTTP contract is generated from its own models; imported here, not at module level, so the
    # contracts never depend on the api.
    from signoff.api.app import openapi_document

    files[OPENAPI_FILE] = _json(openapi_document())
    return dict(sorted(files.items()))


def drift(out_dir: Path) -> list[str]:
    """Files in `out_dir` that differ from a fresh generation: changed, missing, or left from a removed event."""
    expected = render()
    drifted = [name for name, content in expected.items() if _read(out_dir / name) != content]
    drifted += _stale(out_dir, expected)
    return sorted(drifted)


def write(out_dir: Path) -> list[str]:
    """Bring `out_dir` up to date; returns the names of the files written or removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = render()
    changed = []
    for name, content in expected.items():
        if _read(out_dir / name) != content:
            (out_dir / name).write_text(content, encoding="utf-8", newline="\n")
            changed.append(name)
    for name in _stale(out_dir, expected):
        (out_dir / name).unlink()
        changed.append(name)
    return sorted(changed)


def _event_message(model: type[EventData], topic: Topic) -> dict[str, Any]:
    doc = _doc(model)
    return {
        "name": model.event_type,
        "title": model.__name__,
        "summary": doc.split("\n\n", 1)[0].replace("\n", " "),
        "description": doc,
        "contentType": STRUCTURED_CONTENT_TYPE,
        "headers": _event_message_headers(),
        "payload": {"$ref": f"./{schema_file(model.event_type)}"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": topic.key},
                "bindingVersion": _KAFKA_BINDING_VERSION,
            }
        },
    }


def _cdevent_message(event_type: str, topic: Topic) -> dict[str, Any]:
    schema = "approval" + event_type.split(".")[3] + ".json"
    description = (
        f"The CDEvents (spec {CDEVENTS_SPECVERSION}) event `{event_type}` as a CloudEvents {SPECVERSION} event in "
        f"structured mode: `type` is the CDEvents type, `id` / `source` / `time` are the CDEvent's context id / "
        "source / timestamp, `subject` is the gate id, and `data` is the whole CDEvent (`context` + `subject`), "
        f"valid against the official JSON Schema `schemas/cdevents/schemas/{schema}` (copied unchanged from the "
        "CDEvents specification, Apache-2.0). docs/events.md has the mapping from gate events."
    )
    return {
        "name": event_type,
        "title": message_name(event_type),
        "summary": f"CDEvents {event_type} about one gate.",
        "description": description,
        "contentType": STRUCTURED_CONTENT_TYPE,
        "headers": _event_message_headers(),
        "payload": {
            "type": "object",
            "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"],
            "properties": {
                "specversion": {"const": SPECVERSION, "description": "CloudEvents version."},
                "id": {"type": "string", "minLength": 1, "description": "The CDEvent's context.id."},
                "source": {"type": "string", "minLength": 1, "description": "The CDEvent's context.source."},
                "type": {"const": event_type, "description": "The CDEvents type."},
                "subject": {"type": "string", "minLength": 1, "description": "The gate id (subject.id)."},
                "time": {"type": "string", "format": "date-time", "description": "The CDEvent's timestamp."},
                "datacontenttype": {"const": DATA_CONTENT_TYPE, "description": "Media type of data."},
                "data": {
                    "type": "object",
                    "required": ["context", "subject"],
                    "description": f"The CDEvent; valid against `schemas/cdevents/schemas/{schema}`.",
                },
            },
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": topic.key},
                "bindingVersion": _KAFKA_BINDING_VERSION,
            }
        },
    }


def _event_message_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            CONTENT_TYPE_HEADER: {"const": STRUCTURED_CONTENT_TYPE, "description": "Structured mode."},
            TRACEPARENT_HEADER: {
                "type": "string",
                "pattern": _TRACEPARENT_PATTERN,
                "description": "W3C Trace Context of the trace the event belongs to.",
            },
        },
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "deadletter",
        "title": "DeadLetter",
        "summary": "A message a consumer could not process, kept as it was.",
        "contentType": "application/octet-stream",
        "description": DEAD_LETTER.description,
        "headers": {
            "type": "object",
            "required": sorted(DLQ_HEADERS),
            "properties": {name: {"type": "string", "description": text} for name, text in DLQ_HEADERS.items()},
        },
        "payload": {"description": "The original message value, byte for byte (any content)."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": DEAD_LETTER.key},
                "bindingVersion": _KAFKA_BINDING_VERSION,
            }
        },
    }


def _doc(model: type) -> str:
    return inspect.cleandoc(model.__doc__ or "")


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _stale(out_dir: Path, expected: dict[str, str]) -> list[str]:
    if not out_dir.is_dir():
        return []
    return [path.name for path in out_dir.iterdir() if _GENERATED.match(path.name) and path.name not in expected]


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks, so descriptions read as text in the AsyncAPI document."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
