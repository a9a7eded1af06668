"""Gate events -> CDEvents approval events: every one built validates against the official CDEvents JSON Schemas,
and its CloudEvent (as the outbox row carries it) parses with the CloudEvents SDK."""

from __future__ import annotations

import copy
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from signoff import contracts as wire
from signoff.approval.cdevents import SERVICE_URN, ApprovalLinks, to_cdevent
from signoff.approval.domain import Gate, GateEvent
from signoff.approval.domain import events as domain_events
from signoff.approval.mapping import StoredGate
from signoff.approval.unit_of_work import cdevent_record
from signoff.contracts.cdevents import (
    APPROVAL_CLOSED,
    APPROVAL_CREATED,
    APPROVAL_UPDATED,
    CDEVENT_TYPES,
    chain_id,
    user_urn,
)
from signoff.contracts.events import StageMetadata
from signoff.contracts.topics import CDEVENTS, topic_for
from signoff.kernel import ApprovalRule, DecisionStatus, Policy, TimeoutAction
from tests.support.cdevents import conformance_example, parse_record, schema_errors
from tests.unit.approval.builders import ALICE, BOB, CAROL, GROUPS, KEY, T0, open_gate, vote

LINKS = ApprovalLinks("https://signoff.example.com/")
GATE_ID = "6f1c2d9e-0000-4000-8000-000000000001"
TWO_FROM_QA = Policy(rules=(ApprovalRule(user_groups=("qa",), minimum_count=2),))


def stored(gate, *, triggerer: str = "mallory") -> StoredGate:
    request = wire.ApprovalRequested(
        key=wire.GateKey(
            pipeline_id=KEY.pipeline,
            execution_id=KEY.execution,
            stage_id=KEY.stage,
            step_id=KEY.step,
            attempt=KEY.attempt,
        ),
        pipeline_name="Shop",
        stage_name="Prod",
        step_name="Approve",
        triggered_by=wire.Person(user=triggerer),
        policy=wire.ApprovalPolicy(user_groups=["qa"], minimum_count=1),
        timeout="1h",
        current_stage=StageMetadata(identifier=KEY.stage, name="Prod", type="Deployment"),
        requested_at=T0,
    )
    return StoredGate(GATE_ID, gate, request)


def cdevents(events: list[GateEvent], gate) -> list[dict]:
    """The CDEvents of `events`, as JSON, each checked against the official schema."""
    built = [to_cdevent(event, stored(gate), LINKS) for event in events]
    documents = [cdevent.document() for cdevent in built if cdevent is not None]
    for document in documents:
        assert schema_errors(document) == [], document
    return documents


def opened_event(gate) -> domain_events.GateOpened:
    """The GateOpened `gate` was opened with (the builder drops it)."""
    _, (opened,) = Gate.open(
        gate.key, gate.policy, gate.inputs, GROUPS, None, T0, gate.expires_at - T0, gate.timeout_action
    )
    return opened


# ------------------------------------------------------------------------------------------ the validator itself


@pytest.mark.parametrize("cdevent_type", CDEVENT_TYPES)
def test_the_official_conformance_examples_validate(cdevent_type: str) -> None:
    assert schema_errors(conformance_example(cdevent_type)) == []


@pytest.mark.parametrize(
    ("cdevent_type", "break_it", "expected"),
    [
        (APPROVAL_CREATED, lambda d: d["subject"]["content"].pop("requestor"), "'requestor' is a required property"),
        (APPROVAL_CREATED, lambda d: d["subject"]["content"].update(requestor="alice smith"), "is not a 'uri'"),
        (APPROVAL_UPDATED, lambda d: d["subject"]["content"].update(decision="maybe"), "is not one of"),
        (APPROVAL_CLOSED, lambda d: d["subject"]["content"].pop("status"), "'status' is a required property"),
        (APPROVAL_CLOSED, lambda d: d["context"].update(timestamp="yesterday"), "is not a 'date-time'"),
        (APPROVAL_CLOSED, lambda d: d["context"]["links"].append({"linkType": "NOPE"}), "$.context.links[3]"),
    ],
)
def test_the_validator_refuses_what_the_schemas_refuse(cdevent_type: str, break_it, expected: str) -> None:
    """Formats and the linked $refs are checked too (the validator would pass anything if they were not)."""
    document = copy.deepcopy(conformance_example(cdevent_type))
    break_it(document)
    errors = schema_errors(document)
    assert errors and any(expected in error for error in errors), errors


# ------------------------------------------------------------------------------------------ the mapping


def test_a_gate_approved_by_two_votes_is_created_updated_twice_and_closed() -> None:
    gate = open_gate(TWO_FROM_QA)
    first = vote(gate, ALICE)
    second = vote(gate, BOB, at=T0 + timedelta(minutes=2))
    created, update_1, update_2, closed = cdevents([opened_event(gate), *first, *second], gate)

    assert [d["context"]["type"] for d in (created, update_1, update_2, closed)] == [
        APPROVAL_CREATED,
        APPROVAL_UPDATED,
        APPROVAL_UPDATED,
        APPROVAL_CLOSED,
    ]
    chain = str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "urn:signoff:execution"), KEY.execution))
    for document in (created, update_1, update_2, closed):
        assert document["context"]["chainId"] == chain == chain_id(KEY.execution)
        assert document["context"]["source"] == "urn:signoff:approval"
        assert document["context"]["specversion"] == "0.6.0-draft"
        assert document["subject"]["id"] == GATE_ID
        content = document["subject"]["content"]
        assert content["approvalDetailsUrl"] == f"https://signoff.example.com/gates/{GATE_ID}"
        assert content["resourceTargetUrl"] == f"https://signoff.example.com/api/v1/executions/{KEY.execution}"
    assert len({d["context"]["id"] for d in (created, update_1, update_2, closed)}) == 4
    assert created["subject"]["content"]["requestor"] == "urn:signoff:user:mallory"
    assert created["context"]["timestamp"] == "2025-03-01T12:00:00Z"
    assert {k: update_1["subject"]["content"][k] for k in ("responder", "decision")} == {
        "responder": "urn:signoff:user:alice",
        "decision": "approved",
    }
    assert update_2["subject"]["content"]["responder"] == "urn:signoff:user:bob"
    assert {k: closed["subject"]["content"][k] for k in ("responder", "decision", "status")} == {
        "responder": "urn:signoff:user:bob",  # the vote that met the quorum
        "decision": "approved",
        "status": "approved",
    }
    assert closed["context"]["timestamp"] == "2025-03-01T12:02:00Z"


def test_a_rejection_by_vote_names_the_rejecter() -> None:
    gate = open_gate()
    (updated, closed) = cdevents(vote(gate, ALICE, DecisionStatus.REJECT), gate)
    assert updated["subject"]["content"]["decision"] == "rejected"
    assert closed["subject"]["content"] | {"approvalDetailsUrl": "", "resourceTargetUrl": ""} == {
        "approvalDetailsUrl": "",
        "resourceTargetUrl": "",
        "responder": "urn:signoff:user:alice",
        "decision": "rejected",
        "status": "rejected",
    }


@pytest.mark.parametrize(
    ("action", "status", "decision"),
    [
        (TimeoutAction.FAIL, "expired", "rejected"),
        (TimeoutAction.APPROVE, "approved", "approved"),
        (TimeoutAction.REJECT, "rejected", "rejected"),
    ],
)
def test_a_timeout_is_closed_by_the_service(action: TimeoutAction, status: str, decision: str) -> None:
    gate = open_gate(timeout_action=action)
    (closed,) = cdevents(gate.expire(T0 + timedelta(hours=1)), gate)
    content = closed["subject"]["content"]
    assert (content["status"], content["decision"], content["responder"]) == (status, decision, SERVICE_URN)


def test_a_cancelled_and_a_superseded_gate() -> None:
    gate = open_gate()
    (cancelled,) = cdevents(gate.cancel("aborted", T0 + timedelta(minutes=5)), gate)
    assert cancelled["subject"]["content"]["status"] == "cancelled"
    assert cancelled["subject"]["content"]["responder"] == SERVICE_URN

    older = open_gate()
    newer = KEY.__class__(KEY.pipeline, "exec-2", KEY.stage, KEY.step, KEY.attempt)
    (superseded,) = cdevents(older.supersede(newer, T0 + timedelta(minutes=5)), older)
    assert (superseded["subject"]["content"]["status"], superseded["subject"]["content"]["responder"]) == (
        "rejected",
        SERVICE_URN,
    )


def test_a_refused_decision_has_no_cdevent() -> None:
    gate = open_gate()
    events = vote(gate, CAROL)  # not in qa
    assert [type(e).__name__ for e in events] == ["DecisionRefused"]
    assert to_cdevent(events[0], stored(gate), LINKS) is None


def test_user_urns_stay_valid_uris() -> None:
    assert user_urn("dana@example.com") == "urn:signoff:user:dana@example.com"
    assert user_urn("Dana Smith/ops") == "urn:signoff:user:Dana%20Smith%2Fops"
    gate = open_gate()
    odd = StoredGate(GATE_ID, gate, stored(gate, triggerer="dañ#1?x%[y]").request)  # a user id may hold these
    document = to_cdevent(opened_event(gate), odd, LINKS).document()
    assert schema_errors(document) == []


def test_chain_ids_are_per_execution() -> None:
    assert chain_id("exec-1") == chain_id("exec-1") != chain_id("exec-2")
    uuid.UUID(chain_id("exec-1"))


# ------------------------------------------------------------------------------------------ the record


def test_the_outbox_record_is_a_cloudevent_the_sdk_parses() -> None:
    gate = open_gate()
    cdevent = to_cdevent(opened_event(gate), stored(gate), LINKS)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = cdevent_record(cdevent, traceparent=traceparent)
    assert record.topic == CDEVENTS.name == topic_for(APPROVAL_CREATED).name == "signoff.cdevents.v1"
    assert record.key == GATE_ID.encode() and record.id == cdevent.context.id and record.type == APPROVAL_CREATED
    assert dict(record.headers) == {
        "content-type": b"application/cloudevents+json",
        "traceparent": traceparent.encode(),
    }
    event, data = parse_record(record.value, record.headers, record.key)
    assert event.get_specversion() == "1.0"
    assert event.get_type() == APPROVAL_CREATED and event.get_subject() == GATE_ID
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time().isoformat() == "2025-03-01T12:00:00+00:00"
    assert data == cdevent.document()


def test_the_documented_example_validates() -> None:
    """docs/events.md's example record: a CloudEvent the SDK parses, its data valid against the official schema."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "events.md").read_text()
    (example,) = re.findall(r"```json\n(.*?)```", text, re.S)
    event, data = parse_record(example.encode(), [("content-type", b"application/cloudevents+json")], None)
    assert event.get_type() == data["context"]["type"] == APPROVAL_CLOSED
