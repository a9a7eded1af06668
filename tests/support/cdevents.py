"""Checks of what `signoff.cdevents.v1` carries, with the official tools: the CDEvents JSON Schemas (copied
unchanged into schemas/cdevents/) through jsonschema with format checking, and the CloudEvents SDK's Kafka binding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CDEVENTS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "cdevents"
SCHEMA_FILES = {
    "dev.cdevents.approval.created.0.1.0": "approvalcreated.json",
    "dev.cdevents.approval.updated.0.1.0": "approvalupdated.json",
    "dev.cdevents.approval.closed.0.1.0": "approvalclosed.json",
}
CONFORMANCE = {
    "dev.cdevents.approval.created.0.1.0": "approval_created.json",
    "dev.cdevents.approval.updated.0.1.0": "approval_updated.json",
    "dev.cdevents.approval.closed.0.1.0": "approval_closed.json",
}


@cache
def _registry() -> Registry:
    # Every official schema under its own $id: their relative $refs (`links/embeddedlinksarray`) resolve against
    # those ids, with no network.
    resources = []
    for path in sorted((CDEVENTS_DIR / "schemas").rglob("*.json")):
        document = json.loads(path.read_text())
        resources.append((document["$id"], Resource.from_contents(document, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


@cache
def validator(cdevent_type: str) -> Draft202012Validator:
    """The validator of the official schema of `cdevent_type`, checking formats (uri, date-time) too."""
    schema = json.loads((CDEVENTS_DIR / "schemas" / SCHEMA_FILES[cdevent_type]).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker())


def schema_errors(cdevent: Mapping[str, Any]) -> list[str]:
    """What makes `cdevent` invalid against the official schema of its `context.type` (empty when valid)."""
    cdevent_type = cdevent.get("context", {}).get("type")
    if cdevent_type not in SCHEMA_FILES:
        return [f"not a CDEvents approval type: {cdevent_type!r}"]
    return sorted(f"{e.json_path}: {e.message}" for e in validator(cdevent_type).iter_errors(cdevent))


def conformance_example(cdevent_type: str) -> dict[str, Any]:
    return json.loads((CDEVENTS_DIR / "conformance" / CONFORMANCE[cdevent_type]).read_text())


def parse_record(
    value: bytes, headers: Sequence[tuple[str, bytes]], key: bytes | None
) -> tuple[BaseCloudEvent, dict[str, Any]]:
    """The CloudEvent of one Kafka record, as the CloudEvents SDK parses it (it picks structured or binary mode
    from the headers), and its data: the CDEvent, asserted valid against the official schema."""
    event = from_kafka_event(KafkaMessage(headers=dict(headers), key=key, value=value))
    data = event.get_data()
    assert isinstance(data, dict), f"data of {event.get_type()} is {type(data).__name__}, not the CDEvent"
    errors = schema_errors(data)
    assert not errors, f"{event.get_type()} {event.get_id()} breaks the CDEvents schema: {errors}"
    assert event.get_type() == data["context"]["type"]
    assert event.get_id() == data["context"]["id"] and event.get_source() == data["context"]["source"]
    assert event.get_subject() == data["subject"]["id"]
    return event, data
