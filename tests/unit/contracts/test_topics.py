from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from signoff.contracts import EVENT_TYPES, TOPICS, ContractError, ContractErrorReason, decode, message_key, topic_for
from signoff.contracts.cdevents import CDEVENT_TYPES
from signoff.contracts.events import token_digest
from signoff.contracts.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_GATES,
    APPROVAL_REQUESTS,
    CDEVENTS,
    DEAD_LETTER,
    DEAD_LETTER_TOPIC,
    DLQ_ERROR_MAX_CHARS,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_FAILED_AT,
    DLQ_HEADER_ORIGINAL_OFFSET,
    DLQ_HEADER_ORIGINAL_PARTITION,
    DLQ_HEADER_ORIGINAL_TOPIC,
    DLQ_HEADER_REASON,
    DLQ_HEADERS,
    EXECUTION_EVENTS,
    EXECUTION_REQUESTS,
    dead_letter_headers,
)
from tests.unit.contracts.conftest import EXAMPLES, example, to_bytes


def decoded(name: str) -> Any:
    return decode(to_bytes(example(name)), [])


def test_every_event_type_travels_on_exactly_one_versioned_topic() -> None:
    carried = [event_type for topic in TOPICS for event_type in topic.event_types]
    assert sorted(carried) == sorted([*EVENT_TYPES, *CDEVENT_TYPES])  # signoff's own events and the CDEvents
    assert all(topic.name.startswith("signoff.") and topic.name.endswith(".v1") for topic in TOPICS)
    assert len({topic.name for topic in TOPICS}) == len(TOPICS)


def test_topic_for() -> None:
    assert topic_for("io.signoff.approval.requested.v1") is APPROVAL_REQUESTS
    assert topic_for("io.signoff.approval.cancel_requested.v1") is APPROVAL_REQUESTS
    assert topic_for("io.signoff.approval.decision.v1") is APPROVAL_DECISIONS
    assert topic_for("io.signoff.gate.vote_recorded.v1") is APPROVAL_GATES
    assert topic_for("io.signoff.gate.decision_refused.v1") is APPROVAL_GATES
    assert topic_for("io.signoff.execution.abort_requested.v1") is EXECUTION_REQUESTS
    assert topic_for("io.signoff.execution.step_changed.v1") is EXECUTION_EVENTS
    assert topic_for("dev.cdevents.approval.updated.0.1.0") is CDEVENTS
    with pytest.raises(ContractError) as caught:
        topic_for("io.signoff.nothing.v1")
    assert caught.value.reason is ContractErrorReason.UNKNOWN_TYPE


def test_a_gates_events_share_one_key() -> None:
    gate_events = [path.stem for path in EXAMPLES.glob("io.signoff.gate.*.json")]
    keys = {message_key(decoded(name)) for name in gate_events if name != "io.signoff.gate.request_refused.v1"}
    assert keys == {b"gate-5d0c6f0e"}
    # A refused request opened no gate: it is keyed by its natural key, like the request it answers.
    refused = decoded("io.signoff.gate.request_refused.v1")
    assert message_key(refused) == b"payments_release/exec-7f3a/deploy_staging/Harness_Approval_Step/1"


def test_a_request_and_its_cancel_share_one_key() -> None:
    request, cancel = decoded("io.signoff.approval.requested.v1"), decoded("io.signoff.approval.cancel_requested.v1")
    assert message_key(request) == message_key(cancel) == request.data.key.as_path().encode()


def test_both_ways_of_naming_a_gate_give_a_decision_the_same_key() -> None:
    by_id, by_names = (
        decoded("io.signoff.approval.decision.v1"),
        decoded("io.signoff.approval.decision.v1-codepipeline"),
    )
    assert by_id.data.gate_id and by_names.data.gate_id is None
    assert message_key(by_id) == message_key(by_names) == token_digest(by_id.data.token).encode()
    assert by_id.data.token.encode() not in message_key(by_id)


def test_a_refused_decision_without_a_gate_is_keyed_by_its_id() -> None:
    refused = decoded("io.signoff.gate.decision_refused.v1").data.model_copy(update={"gate_id": None, "key": None})
    assert refused.partition_key() == refused.decision_id


def test_executions_are_keyed_by_execution_id() -> None:
    names = [path.stem for path in EXAMPLES.glob("io.signoff.execution.*.json")]
    assert {message_key(decoded(name)) for name in names} == {b"exec-7f3c2a91"}


def test_dead_letter_headers() -> None:
    headers = dead_letter_headers(
        topic="signoff.approval.requests.v1",
        partition=3,
        offset=42,
        consumer="signoff-approval",
        reason=ContractErrorReason.INVALID_DATA,
        error="x" * 5000,
        failed_at=datetime(2025, 3, 4, 11, 30, tzinfo=timezone(timedelta(hours=2))),
    )
    assert [name for name, _ in headers] == list(DLQ_HEADERS)
    values = dict(headers)
    assert values[DLQ_HEADER_ORIGINAL_TOPIC] == b"signoff.approval.requests.v1"
    assert values[DLQ_HEADER_ORIGINAL_PARTITION] == b"3" and values[DLQ_HEADER_ORIGINAL_OFFSET] == b"42"
    assert values[DLQ_HEADER_REASON] == b"invalid_data"
    assert len(values[DLQ_HEADER_ERROR]) == DLQ_ERROR_MAX_CHARS
    assert values[DLQ_HEADER_FAILED_AT] == b"2025-03-04T09:30:00Z"
    assert DEAD_LETTER_TOPIC == DEAD_LETTER.name == "signoff.deadletter.v1" and DEAD_LETTER.event_types == ()
    now = dict(dead_letter_headers(topic="t", partition=0, offset=0, consumer="c", reason="r", error="e"))
    assert now[DLQ_HEADER_FAILED_AT].endswith(b"Z")
