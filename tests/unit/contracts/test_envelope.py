import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from signoff.contracts import ApprovalRequested, ContractError, ContractErrorReason, decode, encode, envelope, new_event
from signoff.contracts.envelope import STRUCTURED_CONTENT_TYPE, valid_traceparent
from tests.unit.contracts.conftest import EXAMPLES, example, to_bytes

STRUCTURED = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def refused(value: bytes | None, headers=STRUCTURED, **kwargs: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        decode(value, headers, **kwargs)
    return caught.value


def test_decodes_a_structured_event(requested: dict[str, Any]) -> None:
    event = decode(to_bytes(requested), [*STRUCTURED, ("traceparent", TRACEPARENT.encode())])
    assert isinstance(event.data, ApprovalRequested)
    assert event.type == "io.signoff.approval.requested.v1"
    assert event.id == requested["id"]
    assert event.source == "urn:signoff:executor"
    assert event.subject == "payments_release/exec-7f3c2a91/deploy_staging/Harness_Approval_Step/1"
    assert event.time == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert event.traceparent == TRACEPARENT
    assert event.data.policy.user_groups == ["docs"]


def test_structured_mode_without_a_content_type_header(requested: dict[str, Any]) -> None:
    assert decode(to_bytes(requested), []).id == requested["id"]


def test_decodes_binary_mode(requested: dict[str, Any]) -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"evt-1"),
        ("ce_source", b"urn:other:pipeline"),
        ("ce_type", b"io.signoff.approval.requested.v1"),
        ("ce_time", b"2025-03-04T10:30:00+01:00"),
        ("ce_subject", b"custom-subject"),
        ("ce_traceparent", TRACEPARENT.encode()),
        ("content-type", b"application/json; charset=utf-8"),
    ]
    event = decode(to_bytes(requested["data"]), headers)
    assert isinstance(event.data, ApprovalRequested)
    assert (event.id, event.source, event.subject) == ("evt-1", "urn:other:pipeline", "custom-subject")
    assert event.time == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert event.traceparent == TRACEPARENT


def test_binary_mode_refuses_malformed_data() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"s"), ("ce_type", b"t")]
    assert refused(b"{", headers).reason is ContractErrorReason.MALFORMED_JSON


def test_round_trip_through_encode_and_decode() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        event = decode(path.read_bytes(), [])
        value, headers = encode(event)
        assert dict(headers)["content-type"] == STRUCTURED_CONTENT_TYPE.encode()
        again = decode(value, headers)
        assert again == event, path.name
        assert encode(again) == (value, headers), "encoding is stable"


def test_new_event_fills_the_envelope(requested: dict[str, Any]) -> None:
    data = decode(to_bytes(requested), []).data
    event = new_event(data, source="urn:signoff:executor")
    assert event.subject == data.key.as_path()
    assert event.time.tzinfo is UTC and abs(datetime.now(UTC) - event.time) < timedelta(minutes=1)
    assert valid_traceparent(event.traceparent)
    assert new_event(data, source="s").id != event.id
    kept = new_event(
        data,
        source="s",
        id="fixed",
        subject="subj",
        traceparent=TRACEPARENT,
        time=datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    )
    assert (kept.id, kept.subject, kept.traceparent) == ("fixed", "subj", TRACEPARENT)
    assert kept.time == datetime(2025, 1, 1, tzinfo=UTC)
    value, headers = encode(kept)
    assert json.loads(value)["time"] == "2025-01-01T00:00:00Z"
    assert ("traceparent", TRACEPARENT.encode()) in headers


def test_producers_are_strict(requested: dict[str, Any]) -> None:
    data = decode(to_bytes(requested), []).data
    with pytest.raises(ValueError, match="traceparent"):
        new_event(data, source="s", traceparent="not-a-traceparent")
    with pytest.raises(ValueError):
        new_event(data, source="s", time=datetime(2025, 1, 1))  # naive: no offset
    with pytest.raises(ValueError, match="source"):
        new_event(data, source="")
    with pytest.raises(ContractError) as caught:
        encode(new_event(data, source="s"), max_bytes=100)
    assert caught.value.reason is ContractErrorReason.TOO_LARGE


def test_tolerates_unknown_fields_on_input(requested: dict[str, Any]) -> None:
    requested["comexampleextension"] = "value"  # a CloudEvents extension attribute
    requested["data"]["added_in_a_later_version"] = {"anything": [1, 2]}
    requested["data"]["policy"]["weight"] = 3
    requested["data"]["upcoming_stages"][0]["environments"][0]["region"] = "eu-west-1"
    event = decode(to_bytes(requested), STRUCTURED)
    assert event.data.upcoming_stages[0].environments[0].ref == "prod_eu"
    assert "added_in_a_later_version" not in event.data.model_dump()


def test_drops_an_invalid_traceparent_instead_of_refusing(requested: dict[str, Any]) -> None:
    event = decode(to_bytes(requested), [*STRUCTURED, ("traceparent", b"00-zz-bad-01")])
    assert event.traceparent is None


@pytest.mark.parametrize("value", [b"{not json", b"\xff\xfe", b"[" * 50_000 + b"]" * 50_000])
def test_refuses_malformed_json(value: bytes) -> None:
    assert refused(value).reason is ContractErrorReason.MALFORMED_JSON


@pytest.mark.parametrize(
    "document",
    [
        [1, 2, 3],
        {"hello": "world"},
        {"specversion": "0.3", "id": "1", "source": "s", "type": "io.signoff.gate.opened.v1"},
        {"specversion": "1.0", "source": "s", "type": "io.signoff.gate.opened.v1", "data": {}},
        {"specversion": "1.0", "id": 7, "source": "s", "type": "io.signoff.gate.opened.v1", "data": {}},
    ],
)
def test_refuses_what_is_not_a_cloudevent(document: Any) -> None:
    assert refused(to_bytes(document)).reason is ContractErrorReason.NOT_CLOUDEVENT


def test_refuses_a_tombstone_and_batches(requested: dict[str, Any]) -> None:
    assert refused(None).reason is ContractErrorReason.NOT_CLOUDEVENT
    batch = [("content-type", b"application/cloudevents-batch+json")]
    assert refused(to_bytes([requested]), batch).reason is ContractErrorReason.NOT_CLOUDEVENT


def test_refuses_an_unknown_type(requested: dict[str, Any]) -> None:
    requested["type"] = "io.signoff.approval.requested.v9"
    error = refused(to_bytes(requested))
    assert error.reason is ContractErrorReason.UNKNOWN_TYPE
    assert (error.event_id, error.event_type) == (requested["id"], "io.signoff.approval.requested.v9")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda doc: doc.pop("time"), ContractErrorReason.INVALID_ENVELOPE),
        (lambda doc: doc.update(time="2025-03-04T09:30:00"), ContractErrorReason.INVALID_ENVELOPE),
        (lambda doc: doc.update(time="yesterday"), ContractErrorReason.INVALID_ENVELOPE),
        (lambda doc: doc.update(datacontenttype="application/xml"), ContractErrorReason.INVALID_ENVELOPE),
        (lambda doc: doc.update(subject=""), ContractErrorReason.INVALID_ENVELOPE),
        (lambda doc: doc.pop("data"), ContractErrorReason.INVALID_DATA),
        (lambda doc: doc.update(data="text"), ContractErrorReason.INVALID_DATA),
        (lambda doc: doc["data"].pop("key"), ContractErrorReason.INVALID_DATA),
        (lambda doc: doc["data"]["policy"].update(minimum_count=0), ContractErrorReason.INVALID_DATA),
        (lambda doc: doc["data"].update(timeout="soon"), ContractErrorReason.INVALID_DATA),
        (lambda doc: doc["data"].update(requested_at="2025-03-04T09:30:00"), ContractErrorReason.INVALID_DATA),
    ],
)
def test_refuses_a_bad_envelope_or_invalid_data(requested: dict[str, Any], change, reason) -> None:
    change(requested)
    assert refused(to_bytes(requested)).reason is reason


def test_refuses_data_base64(requested: dict[str, Any]) -> None:
    requested.pop("data")
    requested["data_base64"] = "e30="
    assert refused(to_bytes(requested)).reason is ContractErrorReason.INVALID_DATA


def test_invalid_data_message_names_the_fields(requested: dict[str, Any]) -> None:
    requested["data"]["policy"]["minimum_count"] = 0
    requested["data"]["timeout"] = "soon"
    message = str(refused(to_bytes(requested)))
    assert message.startswith(f"io.signoff.approval.requested.v1 event {requested['id']}: invalid data: ")
    assert "policy.minimum_count" in message and "timeout" in message


def test_refuses_too_large_before_parsing() -> None:
    error = refused(b"x" * 2048, max_bytes=1024)
    assert error.reason is ContractErrorReason.TOO_LARGE
    assert "2048 bytes" in str(error)


def test_example_decision_subject_defaults_to_gate() -> None:
    document = example("io.signoff.approval.decision.v1")
    document.pop("subject")
    assert decode(to_bytes(document), []).subject == document["data"]["gate_id"]


# The common case is validated in one pass from the bytes (`_structured_in_one_pass`); what that pass does not
# accept gets the full checks (`_event`). Both must read an event the same way.


def _both_ways(document: dict[str, Any], traceparent_header: str | None = None) -> tuple[Any, Any]:
    one_pass = envelope._structured_in_one_pass(to_bytes(document), traceparent_header)
    full = envelope._event(document, document.get("data"), traceparent_header or document.get("traceparent"))
    return one_pass, full


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda path: path.stem)
def test_one_pass_reads_every_example_as_the_full_checks_do(path) -> None:
    document = json.loads(path.read_text())
    one_pass, full = _both_ways(document)
    if full.data.checked_as_sent:
        assert one_pass is None  # a decision keeps the document its signature covers
        assert full.received == document["data"]
        return
    assert one_pass == full
    assert (one_pass.traceparent, one_pass.received) == (full.traceparent, None)


def test_one_pass_agrees_on_unknown_fields_offsets_and_traceparents(requested: dict[str, Any]) -> None:
    requested["time"] = "2025-03-04T10:30:00.250+01:00"
    requested["subject"] = None
    requested["traceparent"] = TRACEPARENT
    requested["newer_attribute"] = {"nested": [1, 2]}
    requested["data"]["newer_field"] = "ignored"
    requested["data"]["key"]["newer_key_field"] = 3
    one_pass, full = _both_ways(requested)
    assert one_pass == full
    assert one_pass.time == datetime(2025, 3, 4, 9, 30, 0, 250000, tzinfo=UTC)
    assert one_pass.subject == "payments_release/exec-7f3c2a91/deploy_staging/Harness_Approval_Step/1"
    assert one_pass.traceparent == full.traceparent == TRACEPARENT
    requested["traceparent"] = "not-a-traceparent"
    one_pass, full = _both_ways(requested, traceparent_header=None)
    assert one_pass.traceparent is None and full.traceparent is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"datacontenttype": "application/vnd.other+json"}, None),  # another JSON type: the full checks accept it
        ({"specversion": "0.3"}, ContractErrorReason.NOT_CLOUDEVENT),
        ({"id": ""}, ContractErrorReason.NOT_CLOUDEVENT),
        ({"type": "io.signoff.unknown.v1"}, ContractErrorReason.UNKNOWN_TYPE),
        ({"time": "2025-03-04T09:30:00"}, ContractErrorReason.INVALID_ENVELOPE),
        ({"subject": ""}, ContractErrorReason.INVALID_ENVELOPE),
        ({"data": None}, ContractErrorReason.INVALID_DATA),
    ],
)
def test_what_one_pass_leaves_alone_the_full_checks_decide(
    requested: dict[str, Any], change: dict[str, Any], reason: ContractErrorReason | None
) -> None:
    requested.update(change)
    assert envelope._structured_in_one_pass(to_bytes(requested), None) is None
    if reason is None:
        assert decode(to_bytes(requested), STRUCTURED).id == requested["id"]
    else:
        assert refused(to_bytes(requested)).reason is reason


def test_refuses_a_nul_character_naming_the_field_it_is_in(requested: dict[str, Any]) -> None:
    """PostgreSQL's text cannot hold NUL: such an event is refused as it enters, never failed in a handler."""
    in_data = json.loads(json.dumps(requested))
    in_data["data"]["message"] = "ship\x00it"
    error = refused(to_bytes(in_data))
    assert (error.reason, error.event_id) == (ContractErrorReason.INVALID_DATA, requested["id"])
    assert str(error) == "message: contains a NUL character (\\u0000), which no text column can store"
    in_key = json.loads(json.dumps(requested))
    in_key["data"]["key"]["pipeline_id\x00"] = "x"
    assert str(refused(to_bytes(in_key))).startswith("key.pipeline_id\x00: contains a NUL")
    in_envelope = {**requested, "subject": "a\x00b"}
    assert refused(to_bytes(in_envelope)).reason is ContractErrorReason.INVALID_ENVELOPE
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"x\x00"), ("ce_source", b"s"), ("ce_type", b"t")]
    assert str(refused(to_bytes(requested["data"]), headers)).startswith("header ce_id contains a NUL character")


def test_an_escaped_backslash_before_u0000_is_no_nul(requested: dict[str, Any]) -> None:
    document = json.loads(json.dumps(requested))
    document["data"]["message"] = "C:\\u0000"  # a backslash, then the text u0000
    value = to_bytes(document)
    assert b"\\\\u0000" in value
    assert decode(value, STRUCTURED).data.message == "C:\\u0000"


def test_model_nul_field_names_the_json_path() -> None:
    event = decode(to_bytes(example("io.signoff.approval.requested.v1")), STRUCTURED)
    assert envelope.model_nul_field(event.data) is None
    flawed = event.data.model_copy(update={"message": "a\x00"})
    assert envelope.model_nul_field(flawed) == "message"
