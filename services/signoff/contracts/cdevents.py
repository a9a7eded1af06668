"""CDEvents approval events (spec 0.6.0-draft): a gate's lifecycle in the words of the rest of the delivery
toolchain, published on `signoff.cdevents.v1` besides signoff's own gate events.

A CDEvent travels as a CloudEvent (CDEvents' CloudEvents binding): structured mode, `type` the CDEvents type, `id`,
`source` and `time` those of the CDEvent's context, `subject` the approval (gate) id, and `data` the whole CDEvent
(`context` + `subject`). The official JSON Schemas are in `schemas/cdevents/` (copied unchanged from the CDEvents
specification; the tests validate every event built here against them). docs/events.md has the mapping.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from signoff.contracts.base import UtcDateTime, format_utc
from signoff.contracts.envelope import (
    CONTENT_TYPE_HEADER,
    DATA_CONTENT_TYPE,
    MAX_EVENT_BYTES,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    TRACEPARENT_HEADER,
    ContractError,
    ContractErrorReason,
)

CDEVENTS_SPECVERSION = "0.6.0-draft"
"""The CDEvents specification version the approval events belong to (the CDEvent's `context.specversion`)."""

APPROVAL_CREATED = "dev.cdevents.approval.created.0.1.0"
APPROVAL_UPDATED = "dev.cdevents.approval.updated.0.1.0"
APPROVAL_CLOSED = "dev.cdevents.approval.closed.0.1.0"
CDEVENT_TYPES: tuple[str, ...] = (APPROVAL_CREATED, APPROVAL_UPDATED, APPROVAL_CLOSED)
"""The CDEvents types signoff publishes (each also the CloudEvents `type` of its message)."""

_CHAIN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:signoff:execution")
"""Namespace of the chain ids: `chain_id(execution)` is UUIDv5(this, execution id)."""


def chain_id(execution_id: str) -> str:
    """The CDEvents `context.chainId` of every event of one execution: UUIDv5 of the execution id in the namespace
    UUIDv5(URL, `urn:signoff:execution`). Deterministic, so any replica (and any consumer that knows the execution
    id) derives the same chain without storing it."""
    return str(uuid.uuid5(_CHAIN_NAMESPACE, execution_id))


def user_urn(user: str) -> str:
    """A signoff user (as the credential proved it) as a URN, `urn:signoff:user:<user>`: characters a URN may not
    hold are percent-encoded, so an e-mail address stays readable (`urn:signoff:user:dana@example.com`)."""
    return "urn:signoff:user:" + quote(user, safe="@.-_~!$&'()*+,;=:")


class Decision(StrEnum):
    """`subject.content.decision` values signoff writes (the CDEvents enum also has escalated, delegate, deferred
    and requestChanges, which signoff's approvers cannot answer)."""

    APPROVED = "approved"
    REJECTED = "rejected"


class ClosedStatus(StrEnum):
    """`subject.content.status` of approval.closed: the gate's outcome."""

    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class _CDEventModel(BaseModel):
    # CDEvents fields are camelCase on the wire; the Python names stay snake_case.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True)


class CDEventContext(_CDEventModel):
    """The CDEvent's `context`."""

    specversion: str = CDEVENTS_SPECVERSION
    id: str = Field(description="Unique id of the event; also the CloudEvent id.")
    source: str = Field(description="The producer, `urn:signoff:approval`.")
    type: str = Field(description="The CDEvents type.")
    timestamp: UtcDateTime
    chain_id: str = Field(alias="chainId", description="Ties one execution's events together (see `chain_id`).")


class ApprovalContent(_CDEventModel):
    """`subject.content` of the three approval events; created has no responder, decision or status, updated no
    status."""

    approval_details_url: str = Field(alias="approvalDetailsUrl", description="The gate's page on the api.")
    resource_target_url: str = Field(alias="resourceTargetUrl", description="The execution the gate holds up.")
    requestor: str | None = Field(None, description="URN of who started the execution (created only).")
    responder: str | None = Field(None, description="URN of who decided (updated, closed).")
    decision: Decision | None = None
    status: ClosedStatus | None = None


class ApprovalSubject(_CDEventModel):
    """The CDEvent's `subject`: the approval is the gate."""

    id: str = Field(description="The gate id.")
    source: str
    content: ApprovalContent


class ApprovalCDEvent(_CDEventModel):
    """One CDEvents approval event (created, updated or closed, by `context.type`)."""

    context: CDEventContext
    subject: ApprovalSubject

    @property
    def type(self) -> str:
        return self.context.type

    def document(self) -> dict[str, Any]:
        """The CDEvent as JSON-ready data (absent optional fields left out, as the schemas require)."""
        return self.model_dump(mode="json", exclude_none=True)


def encode_cdevent(
    event: ApprovalCDEvent, *, traceparent: str | None = None, max_bytes: int = MAX_EVENT_BYTES
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The Kafka value (a structured-mode CloudEvent whose data is the CDEvent) and headers of `event`, as
    `envelope.encode` writes signoff's own events. Raises ContractError(`too_large`) past `max_bytes`."""
    document = {
        "specversion": SPECVERSION,
        "id": event.context.id,
        "source": event.context.source,
        "type": event.context.type,
        "subject": event.subject.id,
        "time": format_utc(event.context.timestamp),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": event.document(),
    }
    value = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    if len(value) > max_bytes:
        raise ContractError(
            ContractErrorReason.TOO_LARGE,
            f"{event.type} event {event.context.id} is {len(value)} bytes, more than the {max_bytes} allowed",
            event_id=event.context.id,
            event_type=event.type,
        )
    headers = [(CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode())]
    if traceparent:
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    return value, headers
