"""The topic registry: versioned topic names, the message key of each, and the events each carries.

Keys keep related events in order on one partition:

- Gate events are keyed by the gate id, so a gate's opened / vote / outcome events are read in the order written.
- Approval requests and cancels are keyed by the gate's natural key (`pipeline/execution/stage/step/attempt`): the
  requester knows it before any gate id exists, so a cancel always follows its request.
- Decisions are keyed by `token_digest(token)`. A decision names its gate either by gate id or CodePipeline-style by
  pipeline + stage + action names, but both forms carry the gate's token, so both producer sides compute the same
  key and one gate's votes (e.g. an approver changing their vote) stay in order. The digest, not the token, is the
  key because keys surface in logs and tooling.
- Execution requests and events are keyed by the execution id.
- CDEvents are keyed by the gate id (the approval's `subject.id`), like the gate events they mirror.

A topic name ends in its major version: an incompatible change to a topic's events is a new topic, written in
parallel while consumers move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from signoff.contracts.base import format_utc
from signoff.contracts.cdevents import CDEVENT_TYPES
from signoff.contracts.envelope import ContractError, ContractErrorReason, Event
from signoff.contracts.events import (
    ApprovalCancelRequested,
    ApprovalDecision,
    ApprovalRequested,
    DecisionRefused,
    ExecutionAborted,
    ExecutionAbortRequested,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionStepChanged,
    ExecutionSucceeded,
    GateApproved,
    GateCancelled,
    GateExpired,
    GateOpened,
    GateRejected,
    RequestRefused,
    VoteRecorded,
)


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic of the contract."""

    name: str
    """Versioned topic name."""
    key: str
    """What the message key is, and why."""
    event_types: tuple[str, ...]
    """The CloudEvents types it carries (empty for the dead-letter topic, which carries any message)."""
    description: str
    """What flows through it, who produces and who consumes."""
    senders: tuple[str, ...] = ()
    """The signoff roles that publish to it (outside systems named in `description` may too)."""
    receivers: tuple[str, ...] = ()
    """The signoff roles that consume it (outside systems named in `description` may too)."""


APPROVAL_REQUESTS = Topic(
    name="signoff.approval.requests.v1",
    key="The gate's natural key `pipeline_id/execution_id/stage_id/step_id/attempt` (`GateKey.as_path()`): known "
    "to the requester before a gate id exists, so a cancel follows its request on the same partition.",
    event_types=(ApprovalRequested.event_type, ApprovalCancelRequested.event_type),
    description="Requests to open or cancel approval gates. Produced by the executor or any pipeline system; "
    "consumed by the approval service.",
    senders=("executor",),
    receivers=("approval",),
)
APPROVAL_DECISIONS = Topic(
    name="signoff.approval.decisions.v1",
    key="`token_digest(token)`: lowercase hex SHA-256 of the gate token. Every decision carries the token whether it "
    "names the gate by id or by pipeline/stage/action, so every producer computes the same key and one gate's "
    "decisions stay in order.",
    event_types=(ApprovalDecision.event_type,),
    description="Signed approver decisions. Produced by decision sources (CLI, web, Slack, other systems); consumed "
    "by the approval service.",
    senders=("api",),
    receivers=("approval",),
)
APPROVAL_GATES = Topic(
    name="signoff.approval.gates.v1",
    key="The gate id, so one gate's events are read in the order written; a DecisionRefused that matched no gate is "
    "keyed by its decision id, a RequestRefused (no gate was opened) by the request's natural key.",
    event_types=(
        GateOpened.event_type,
        VoteRecorded.event_type,
        GateApproved.event_type,
        GateRejected.event_type,
        GateExpired.event_type,
        GateCancelled.event_type,
        DecisionRefused.event_type,
        RequestRefused.event_type,
    ),
    description="What happened to gates, and refused decisions. Produced by the approval service only; consumed by "
    "the executor (outcomes), the notifier, and audit or dashboard systems.",
    senders=("approval",),
    receivers=("executor", "notifier", "api"),
)
EXECUTION_REQUESTS = Topic(
    name="signoff.execution.requests.v1",
    key="The execution id (chosen by the requester), so an abort follows its start request.",
    event_types=(ExecutionRequested.event_type, ExecutionAbortRequested.event_type),
    description="Requests to start or abort pipeline executions. Produced by any system; consumed by the executor.",
    senders=("api",),
    receivers=("executor",),
)
EXECUTION_EVENTS = Topic(
    name="signoff.execution.events.v1",
    key="The execution id, so one execution's events are read in the order written.",
    event_types=(
        ExecutionStarted.event_type,
        ExecutionStepChanged.event_type,
        ExecutionSucceeded.event_type,
        ExecutionFailed.event_type,
        ExecutionAborted.event_type,
    ),
    description="Execution lifecycle. Produced by the executor; consumed by dashboards and other systems.",
    senders=("executor",),
)
CDEVENTS = Topic(
    name="signoff.cdevents.v1",
    key="The gate id (the CDEvent's `subject.id`), so one gate's created / updated / closed events are read in the "
    "order written.",
    event_types=CDEVENT_TYPES,
    description="Each gate's lifecycle as CDEvents approval events (spec 0.6.0-draft; CloudEvents whose type is the "
    "CDEvents type and whose data is the CDEvent, docs/events.md). Produced by the approval service only, in the "
    "same transaction as the gate events; consumed by the rest of the delivery toolchain (dashboards, DORA "
    "metrics, other CD tools).",
    senders=("approval",),
)
DEAD_LETTER = Topic(
    name="signoff.deadletter.v1",
    key="The original message's key, unchanged.",
    event_types=(),
    description="Messages a consumer could not process: the original value and headers, unchanged, plus the "
    "`signoff-dlq-*` headers saying where it came from and why. Produced by every service's consumer loop; read "
    "by operators, and replayable to the original topic.",
    senders=("approval", "executor", "notifier"),
)

TOPICS: tuple[Topic, ...] = (
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    APPROVAL_GATES,
    EXECUTION_REQUESTS,
    EXECUTION_EVENTS,
    CDEVENTS,
    DEAD_LETTER,
)
"""Every topic of the contract."""

_TOPIC_BY_TYPE: Mapping[str, Topic] = MappingProxyType(
    {event_type: topic for topic in TOPICS for event_type in topic.event_types}
)


def topic_for(event_type: str) -> Topic:
    """The topic that carries `event_type`; ContractError(`unknown_type`) for a type no topic carries."""
    try:
        return _TOPIC_BY_TYPE[event_type]
    except KeyError:
        raise ContractError(
            ContractErrorReason.UNKNOWN_TYPE, f"no topic carries event type {event_type!r}", event_type=event_type
        ) from None


def message_key(event: Event[Any]) -> bytes:
    """The Kafka message key of `event` on its topic (see the module docstring)."""
    return event.data.partition_key().encode()


# ---------------------------------------------------------------------------------------------------------------------
# Dead-letter records: the original key, value and headers unchanged (so a record can be replayed as it was),
# followed by the `signoff-dlq-*` headers below. A record dead-lettered twice (replayed, refused again) carries two
# sets; readers take the last occurrence of a header, which is the latest trip.

DEAD_LETTER_TOPIC = DEAD_LETTER.name
DLQ_HEADER_PREFIX = "signoff-dlq-"
DLQ_HEADER_ORIGINAL_TOPIC = "signoff-dlq-original-topic"
DLQ_HEADER_ORIGINAL_PARTITION = "signoff-dlq-original-partition"
DLQ_HEADER_ORIGINAL_OFFSET = "signoff-dlq-original-offset"
DLQ_HEADER_CONSUMER = "signoff-dlq-consumer"
DLQ_HEADER_REASON = "signoff-dlq-reason"
DLQ_HEADER_ERROR = "signoff-dlq-error"
DLQ_HEADER_FAILED_AT = "signoff-dlq-failed-at"
DLQ_ERROR_MAX_CHARS = 1024

DLQ_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        DLQ_HEADER_ORIGINAL_TOPIC: "Topic the message was consumed from.",
        DLQ_HEADER_ORIGINAL_PARTITION: "Its partition, in decimal.",
        DLQ_HEADER_ORIGINAL_OFFSET: "Its offset, in decimal.",
        DLQ_HEADER_CONSUMER: "The consumer (group) that gave up on it.",
        DLQ_HEADER_REASON: f"Machine-readable reason: a ContractError reason ({', '.join(ContractErrorReason)}) "
        "for a message that breaks the contract, or a reason code of the consumer that refused a valid one.",
        DLQ_HEADER_ERROR: f"Human-readable error, at most {DLQ_ERROR_MAX_CHARS} characters.",
        DLQ_HEADER_FAILED_AT: "When it was dead-lettered, UTC ISO 8601.",
    }
)
"""The headers a dead-letter record adds, with their meaning (also in the AsyncAPI document). Values are UTF-8."""


def dead_letter_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    consumer: str,
    reason: str,
    error: str,
    failed_at: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The `signoff-dlq-*` headers of a dead-letter record, to append after the original headers. `failed_at`
    defaults to now."""
    values = {
        DLQ_HEADER_ORIGINAL_TOPIC: topic,
        DLQ_HEADER_ORIGINAL_PARTITION: str(partition),
        DLQ_HEADER_ORIGINAL_OFFSET: str(offset),
        DLQ_HEADER_CONSUMER: consumer,
        DLQ_HEADER_REASON: str(reason),
        DLQ_HEADER_ERROR: error[:DLQ_ERROR_MAX_CHARS],
        DLQ_HEADER_FAILED_AT: format_utc(failed_at or datetime.now(UTC)),
    }
    return [(name, text.encode()) for name, text in values.items()]
