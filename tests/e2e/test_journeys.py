"""The seeds' journeys through all four roles, each a separate process started by `signoff dev up`, driven only
through the `signoff` CLI (a client of the api, with each person's own token) and observed at a webhook sink, as
an operator and approvers would."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import SEED_DECISION, System
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

OPENED, APPROVED, REJECTED = "io.signoff.gate.opened.v1", "io.signoff.gate.approved.v1", "io.signoff.gate.rejected.v1"
EXPIRED, CANCELLED = "io.signoff.gate.expired.v1", "io.signoff.gate.cancelled.v1"
# What the notification must name, from examples/catalog.yaml: the current stage's service, environment (with its
# type) and infrastructure, and the upcoming multi-service, multi-environment stage's.
CATALOG_NAMES = (
    "Checkout API",
    "Staging",
    "PreProduction",
    "Staging cluster",
    "Payments worker",
    "Production EU",
    "Production US",
    "Production",
    "EKS eu-west-1",
    "EKS us-east-1",
)


def _notice(system: System, gate_id: str, event_type: str):
    (received,) = eventually_sync(
        lambda: system.sink.of_gate(gate_id, event_type), timeout=90, what=f"{event_type} of {gate_id} at the sink"
    )
    return received


def _start(system: System, path, user: str = "alice") -> str:
    execution_id = system.signoff("run", str(path), "--var", "tag=2.0.0", user=user).stdout.strip()
    assert re.fullmatch(r"[\w.:-]+", execution_id), execution_id
    return execution_id


def test_codepipeline_decision_file_approves_the_harness_pipeline_which_uses_the_approver_input(system: System):
    # The seed's CodePipeline file names MyFirstPipeline / MyApprovalStage / MyApprovalAction: so does this run.
    path = system.pipeline(
        "first",
        renames={
            "checkout_blue_green": "MyFirstPipeline",
            "staging_blue_green": "MyApprovalStage",
            "Harness_Approval_Step": "MyApprovalAction",
        },
    )
    execution_id = _start(system, path)
    waiting = system.waiting_approval("MyFirstPipeline")
    assert (waiting["stage"], waiting["action"], waiting["status"]) == (
        "MyApprovalStage",
        "MyApprovalAction",
        "InProgress",
    )
    gate_id = waiting["externalExecutionId"]

    opened = _notice(system, gate_id, OPENED)
    text = opened.body["notification"]["text"]
    missing = [name for name in CATALOG_NAMES if name not in text]
    assert not missing, f"the notification lacks {missing}:\n{text}"
    assert "<+" not in opened.raw, "a raw expression reached the webhook"
    assert opened.body["key"]["execution_id"] == execution_id and opened.body["token"] == waiting["token"]
    assert opened.body["notification"]["links"]["approve"].endswith(f"/gates/{gate_id}?action=approve")

    # What dana sees before she decides: the message, the stages resolved from the catalog, her turn.
    shown = json.loads(system.signoff("show", gate_id, "--json", user="dana").stdout)
    assert shown["message"] == "Test" and shown["you"]["may_decide"] is True
    assert [item["text"] for item in shown["current_stage"]["services"]] == ["Checkout API"]
    assert "Payments worker" in [item["text"] for stage in shown["upcoming_stages"] for item in stage["services"]]

    # The approver records the token from get-pipeline-state in the seed's file, and sends it unchanged otherwise.
    decision = system.work / "approvalstage-approved.json"
    decision.write_text(json.dumps(SEED_DECISION | {"token": waiting["token"]}))
    bob = system.signoff("put-approval-result", "--cli-input-json", f"file://{decision}", user="bob", check=False)
    assert bob.returncode == 1 and "refused (not_eligible)" in bob.stderr, (bob.stdout, bob.stderr)
    answered = system.signoff("put-approval-result", "--cli-input-json", f"file://{decision}", user="dana")
    assert f"vote counted: dana approved gate {gate_id}" in answered.stdout, answered.stdout
    assert "gate is now approved" in answered.stdout

    finished = system.wait_status(execution_id, "SUCCEEDED")
    assert finished["pipeline"] == "MyFirstPipeline"
    logs = system.signoff("logs", execution_id).stdout
    assert "foo is bar" in logs, logs  # the approver input's default, as an output of the approval step
    assert _notice(system, gate_id, APPROVED).body["votes"][0]["approver"] == "dana"

    state = json.loads(system.signoff("get-pipeline-state", "--name", "MyFirstPipeline", "--json").stdout)
    (action,) = [a for s in state["stageStates"] for a in s["actionStates"] if a["actionName"] == "MyApprovalAction"]
    assert action["latestExecution"]["status"] == "Succeeded" and "token" not in action["latestExecution"]
    assert "Ready to release to customers." in action["latestExecution"]["summary"]


def test_a_rejection_fails_the_pipeline_and_is_announced(system: System):
    path = system.pipeline("reject", renames={"checkout_blue_green": "e2e_reject"})
    execution_id = _start(system, path)
    waiting = system.waiting_approval("e2e_reject")
    gate_id = waiting["externalExecutionId"]
    rejected = system.signoff(
        "reject", gate_id, "--token", waiting["token"], "--comment", "error rate too high", user="eli"
    )
    assert "rejected" in rejected.stdout.lower(), rejected.stdout
    failed = system.wait_status(execution_id, "FAILED")
    assert "reject" in (failed["reason"] or "").lower(), failed
    notice = _notice(system, gate_id, REJECTED)
    assert notice.body["rejected_by"] == "eli" and notice.body["comment"] == "error rate too high"


def test_a_gate_that_times_out_fails_the_pipeline(system: System):
    path = system.pipeline("timeout", renames={"checkout_blue_green": "e2e_timeout"}, timeout="3s")
    execution_id = _start(system, path)
    # The gate lives 3 s: it is found by its expiry notice, not caught while it is pending (a loaded machine can
    # take longer than that to answer a poll).
    failed = system.wait_status(execution_id, "FAILED")
    assert "expire" in (failed["reason"] or "").lower(), failed
    (expired,) = eventually_sync(
        lambda: [r for r in system.sink.received if r.event_type == EXPIRED and execution_id in r.raw],
        timeout=90,
        what=f"the expiry notice of {execution_id}'s gate",
    )
    shown = json.loads(system.signoff("show", expired.body["gate_id"], "--json", user="dana").stdout)
    assert shown["status"] == "expired" and shown["execution_id"] == execution_id, shown


def test_aborting_the_execution_cancels_its_gate(system: System):
    path = system.pipeline("abort", renames={"checkout_blue_green": "e2e_abort"})
    execution_id = _start(system, path)
    waiting = system.waiting_approval("e2e_abort")
    system.signoff("abort", execution_id, "--reason", "wrong tag", user="alice")
    system.wait_status(execution_id, "ABORTED")
    assert "wrong tag" in _notice(system, waiting["externalExecutionId"], CANCELLED).raw
    late = system.signoff("approve", waiting["externalExecutionId"], user="dana", check=False)
    assert late.returncode == 1 and "gate_closed" in late.stderr, late.stderr


def test_a_quorum_of_two_refuses_the_pipeline_executor_and_needs_two_others(system: System):
    path = system.pipeline(
        "quorum",
        renames={"checkout_blue_green": "e2e_quorum"},
        approvers={"userGroups": ["sre"], "minimumCount": 2, "disallowPipelineExecutor": True},
    )
    execution_id = _start(system, path, user="alice")
    waiting = system.waiting_approval("e2e_quorum")
    gate_id, token = waiting["externalExecutionId"], waiting["token"]

    own = system.signoff("approve", gate_id, "--token", token, user="alice", check=False)
    assert own.returncode == 1 and "self_approval" in own.stderr, (own.stdout, own.stderr)
    first = system.signoff("approve", gate_id, "--token", token, "--input", "foo=from-bob", user="bob")
    assert "1 of 2 approvers" in first.stdout and first.stdout.rstrip().endswith("gate is now pending"), first.stdout
    assert system.execution(execution_id)["status"] == "RUNNING"
    system.signoff("approve", gate_id, "--token", token, "--input", "foo=quorum", user="carol")

    system.wait_status(execution_id, "SUCCEEDED")
    assert "foo is quorum" in system.signoff("logs", execution_id).stdout  # the last approver's value wins
    approved = _notice(system, gate_id, APPROVED)
    assert sorted(vote["approver"] for vote in approved.body["votes"]) == ["bob", "carol"]
