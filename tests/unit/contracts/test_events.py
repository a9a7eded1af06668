import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
import yaml
from pydantic import ValidationError

from signoff.contracts import (
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequested,
    ApproverInput,
    GateKey,
    decode,
    encode,
    new_event,
)
from signoff.contracts.durations import parse_duration
from signoff.contracts.events import DecisionStatus, GateRejected
from tests.support.seeds import CODEPIPELINE_DECISION, HARNESS_APPROVAL_STEP_YAML
from tests.unit.contracts.conftest import REPO, example, to_bytes

HARNESS_STEP = HARNESS_APPROVAL_STEP_YAML
CODEPIPELINE_JSON = CODEPIPELINE_DECISION
DECIDED_AT = datetime(2025, 3, 4, 9, 44, tzinfo=UTC)


def request_data(document: dict[str, Any]) -> dict[str, Any]:
    return document["data"]


def test_the_seed_harness_approval_spec_validates_unchanged() -> None:
    step = yaml.safe_load(HARNESS_STEP)[0]["step"]
    spec = step["spec"]
    policy = ApprovalPolicy.model_validate(spec["approvers"])
    inputs = [ApproverInput.model_validate(item) for item in spec["approverInputs"]]
    assert (policy.user_groups, policy.users, policy.minimum_count) == (["docs"], [], 1)
    assert policy.disallow_pipeline_executor is False
    assert [rule.user_groups for rule in policy.all_rules()] == [["docs"]]
    assert [(item.name, item.default_value, item.required) for item in inputs] == [("foo", "bar", False)]
    assert parse_duration(step["timeout"]) == timedelta(days=1)
    # Written back in snake_case, the one spelling of our own events.
    assert policy.model_dump() == {
        "user_groups": ["docs"],
        "users": [],
        "minimum_count": 1,
        "disallow_pipeline_executor": False,
        "rules": [],
    }


def test_the_example_request_carries_the_seed_values() -> None:
    data = decode(to_bytes(example("io.signoff.approval.requested.v1")), []).data
    assert isinstance(data, ApprovalRequested)
    assert (data.message_template, data.timeout, data.timeout_span) == ("Test", "1d", timedelta(days=1))
    assert data.policy.user_groups == ["docs"] and data.policy.minimum_count == 1
    assert [(item.name, item.default_value) for item in data.approver_inputs] == [("foo", "bar")]
    assert data.include_pipeline_execution_history and data.execution_history
    upcoming = data.upcoming_stages[0]
    assert len(upcoming.service_refs) > 1 and len(upcoming.environments) > 1
    assert any("<+" in ref for env in upcoming.environments for ref in env.infrastructure_refs)


def test_policy_rules_must_all_name_someone() -> None:
    policy = ApprovalPolicy.model_validate(
        {"rules": [{"userGroups": ["qa"]}, {"user_groups": ["sre"], "minimum_count": 2}]}
    )
    assert [(rule.user_groups, rule.minimum_count) for rule in policy.all_rules()] == [(["qa"], 1), (["sre"], 2)]
    with pytest.raises(ValidationError, match="must list user_groups, users or rules"):
        ApprovalPolicy()
    with pytest.raises(ValidationError, match="must list user_groups or users"):
        ApprovalPolicy(user_groups=["docs"], rules=[{"minimum_count": 2}])
    # Whether a rule can be met is the approval service's to decide (a RequestRefused), not the wire model's.
    assert ApprovalPolicy(users=["alice"], minimum_count=2).minimum_count == 2
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ApprovalPolicy(user_groups=["docs"], minimumcount=2)


def test_approver_input_default_must_be_allowed() -> None:
    assert ApproverInput.model_validate({"name": "env", "defaultValue": "eu", "allowedValues": ["eu", "us"]})
    with pytest.raises(ValidationError, match="not an allowed value"):
        ApproverInput(name="env", default_value="asia", allowed_values=["eu", "us"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data["current_stage"].update(identifier="other"), "differs from key.stage_id"),
        (lambda data: data["approver_inputs"].append({"name": "foo"}), "names must be unique"),
        (lambda data: data.update(include_pipeline_execution_history=False), "only sent when"),
        (lambda data: data.update(timeout="0s"), "longer than zero"),
        (lambda data: data.update(unexpected=True), "Extra inputs are not permitted"),
        (lambda data: data["key"].update(stage_id="a/b"), "String should match pattern"),
    ],
)
def test_request_invariants(change, message: str) -> None:
    data = request_data(example("io.signoff.approval.requested.v1"))
    change(data)
    with pytest.raises(ValidationError, match=message):
        ApprovalRequested.model_validate(data)


def test_times_need_an_offset_and_are_kept_in_utc() -> None:
    data = request_data(example("io.signoff.approval.requested.v1"))
    data["requested_at"] = datetime(2025, 3, 4, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    assert ApprovalRequested.model_validate(data).requested_at == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    data["requested_at"] = datetime(2025, 3, 4, 9, 30)
    with pytest.raises(ValidationError, match="timezone"):
        ApprovalRequested.model_validate(data)


def test_a_codepipeline_result_becomes_a_decision() -> None:
    decision = ApprovalDecision.from_codepipeline(
        CODEPIPELINE_JSON, approver="bob", source="cli", decision_id="dec-1", decided_at=DECIDED_AT
    )
    assert (decision.pipeline_name, decision.stage_name, decision.action_name) == (
        "MyFirstPipeline",
        "MyApprovalStage",
        "MyApprovalAction",
    )
    assert decision.token == "1a2b3c4d-573f-4ea7-a67E-XAMPLETOKEN"
    assert decision.status is DecisionStatus.APPROVED
    assert decision.comment == "The new design looks good. Ready to release to customers."
    assert (decision.approver, decision.source, decision.gate_id, decision.signature) == ("bob", "cli", None, None)
    assert decision.default_subject() == "MyFirstPipeline/MyApprovalStage/MyApprovalAction"
    generated = ApprovalDecision.from_codepipeline(CODEPIPELINE_JSON, approver="bob", source="cli")
    assert generated.decision_id and generated.decided_at.tzinfo is UTC


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["result"].update(status="approved"),  # CodePipeline requires the capitalised form
        lambda doc: doc.pop("token"),
        lambda doc: doc.update(pipelinName="typo"),
    ],
)
def test_a_malformed_codepipeline_result_is_refused(change) -> None:
    document = {**CODEPIPELINE_JSON, "result": dict(CODEPIPELINE_JSON["result"])}
    change(document)
    with pytest.raises(ValidationError):
        ApprovalDecision.from_codepipeline(document, approver="bob", source="cli")


def test_a_decision_names_its_gate() -> None:
    fields = {
        "decision_id": "d",
        "source": "cli",
        "token": "t",
        "status": "Rejected",
        "approver": "bob",
        "decided_at": DECIDED_AT,
    }
    with pytest.raises(ValidationError, match="names its gate"):
        ApprovalDecision(**fields)
    with pytest.raises(ValidationError, match="go together"):
        ApprovalDecision(**fields, gate_id="g", pipeline_name="p")
    assert ApprovalDecision(**fields, gate_id="g").default_subject() == "g"


def test_signatures_cover_the_canonical_form_and_survive_the_wire() -> None:
    key = b"cli-source-key"
    decision = ApprovalDecision.from_codepipeline(
        CODEPIPELINE_JSON, approver="bob", source="cli", decision_id="dec-1", decided_at=DECIDED_AT
    )
    assert not decision.signature_valid(key)
    signed = decision.signed(key)
    assert signed.signature is not None and len(signed.signature) == 64
    assert signed.signature_valid(key)
    assert not signed.signature_valid(b"another-key")
    assert not signed.model_copy(update={"status": DecisionStatus.REJECTED}).signature_valid(key)
    assert b'"signature"' not in signed.signing_input()
    value, headers = encode(new_event(signed, source="urn:signoff:cli"))
    event = decode(value, headers)
    assert isinstance(event.data, ApprovalDecision) and event.data.signature_valid(key, event.received)


def _worked_example() -> tuple[dict, bytes, str]:
    """The data object, canonical bytes and signature of docs/decisions.md's worked example."""
    text = (REPO / "docs" / "decisions.md").read_text()
    section = text.split("### Worked example", 1)[1]
    blocks = re.findall(r"```(\w+)\n(.*?)\n```", section, flags=re.DOTALL)
    (_, data), (_, canonical), (_, signature) = blocks[:3]
    return json.loads(data), canonical.encode(), signature.strip()


def test_the_documented_worked_example_recomputes() -> None:
    data, canonical, signature = _worked_example()
    assert rfc8785.dumps(data) == canonical
    assert hmac.new(b"example-cli-key", canonical, hashlib.sha256).hexdigest() == signature


def test_a_foreign_signer_signs_what_it_sends() -> None:
    """A sender that leaves out defaults and writes its own timestamp form is checked over what it sent."""
    data, _, signature = _worked_example()
    document = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "urn:example:bot",
        "type": ApprovalDecision.event_type,
        "time": "2025-03-04T09:44:00Z",
        "data": {**data, "signature": signature, "ticket": "CHG-7"},  # an unknown member, signed with the rest
    }
    document["data"]["signature"] = hmac.new(
        b"example-cli-key", rfc8785.dumps({k: v for k, v in document["data"].items() if k != "signature"}), "sha256"
    ).hexdigest()
    event = decode(to_bytes(document), [])
    assert isinstance(event.data, ApprovalDecision)
    assert event.data.signature_valid(b"example-cli-key", event.received)
    # The model re-serialised (defaults filled in, the timestamp rewritten) is not what was signed.
    assert not event.data.signature_valid(b"example-cli-key")
    tampered = {**event.received, "comment": "Ship it"}
    assert not event.data.signature_valid(b"example-cli-key", tampered)
    assert not event.data.signature_valid(b"example-cli-key", {**event.received, "n": 2**60})  # not canonicalisable


def test_the_example_decision_is_signed_with_the_documented_example_key() -> None:
    for name in ("io.signoff.approval.decision.v1", "io.signoff.approval.decision.v1-codepipeline"):
        decision = decode(to_bytes(example(name)), []).data
        assert isinstance(decision, ApprovalDecision) and decision.signature_valid(b"example-cli-key")


def test_gate_rejected_says_who_or_what_rejected() -> None:
    document = request_data(example("io.signoff.gate.rejected.v1"))
    document.pop("rejected_by")
    with pytest.raises(ValidationError, match="rejected_by is required"):
        GateRejected.model_validate(document)
    document.update(cause="superseded")
    with pytest.raises(ValidationError, match="superseded_by is required"):
        GateRejected.model_validate(document)


def test_gate_key_path() -> None:
    key = GateKey(pipeline_id="p", execution_id="e", stage_id="s", step_id="st", attempt=2)
    assert key.as_path() == "p/e/s/st/2"
