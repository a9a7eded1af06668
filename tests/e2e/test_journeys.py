"""The seeds' journeys through all four roles, each a separate process started by `signoff dev up`, driven only
through the `signoff` CLI (a client of the api, with each person's own token) and observed at a webhook sink, as
an operator and approvers would."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest
from aiokafka import AIOKafkaConsumer

from signoff.contracts.cdevents import chain_id
from signoff.contracts.topics import CDEVENTS
from signoff.runtime.devenv import ENV_FILE, read_env_file
from tests.e2e.conftest import SEED_DECISION, SHARED_STACK, System
from tests.support.cdevents import parse_record
from tests.support.waiting import eventually, eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(SHARED_STACK)]  # the shared dev stack

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
    # Script output is for who started the run (alice), who may decide its gates (dana) and admins; not bob.
    assert "foo is bar" in system.signoff("logs", execution_id, user="dana").stdout
    stranger = system.signoff("logs", execution_id, user="bob", check=False)
    assert stranger.returncode == 1 and "foo is bar" not in stranger.stdout
    assert "an approver of its gates or an admin may read its logs" in stranger.stderr, stranger.stderr
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
    audit = json.loads(system.signoff("audit", waiting["externalExecutionId"], "--json", user="alice").stdout)
    (cancel,) = [entry for entry in audit["entries"] if entry["kind"] == "cancel"]
    assert cancel["text"] == "gate cancelled (cancelled: aborted by alice: wrong tag)", cancel
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


def _read_cdevents(bootstrap: str, done) -> list[tuple]:
    """Every record of signoff.cdevents.v1 from the start, read until `done(records)` holds and the consumer has
    reached the end offsets (so nothing written before is left unread)."""

    async def read() -> list[tuple]:
        consumer = AIOKafkaConsumer(
            CDEVENTS.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        records: list[tuple] = []
        try:

            async def caught_up():
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend((r.key, r.value, r.headers or ()) for r in batch)
                if not done(records) or not consumer.assignment():
                    return False
                ends = await consumer.end_offsets(list(consumer.assignment()))
                return all([await consumer.position(tp) >= end for tp, end in ends.items()])

            await eventually(caught_up, timeout=90, what="the journeys' CDEvents on signoff.cdevents.v1")
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


@pytest.mark.timeout(300)  # a whole journey, then the topic read to its end (and, run alone, the stack's start)
def test_every_cdevent_of_the_journeys_validates_and_parses(system: System):
    """The seed journey (run, approval request, gate, a refused and a counted decision, outcome) as CDEvents: each
    record on signoff.cdevents.v1 (this journey's and those of the journeys before it on this stack) parses with
    the CloudEvents SDK and validates against the official schemas; this gate's tell its story."""
    path = system.pipeline("cdevents", renames={"checkout_blue_green": "e2e_cdevents"})
    execution_id = _start(system, path)
    waiting = system.waiting_approval("e2e_cdevents")
    gate_id, token = waiting["externalExecutionId"], waiting["token"]
    refused = system.signoff("approve", gate_id, "--token", token, user="bob", check=False)
    assert refused.returncode == 1 and "not_eligible" in refused.stderr
    system.signoff("approve", gate_id, "--token", token, user="dana")
    system.wait_status(execution_id, "SUCCEEDED")

    def ours(records) -> list[dict]:
        return [json.loads(value)["data"] for key, value, _ in records if key == gate_id.encode()]

    records = _read_cdevents(
        read_env_file(system.work / "dev" / ENV_FILE)["SIGNOFF_KAFKA_BOOTSTRAP"],
        lambda records: any(d["context"]["type"].endswith(".closed.0.1.0") for d in ours(records)),
    )
    for key, value, headers in records:
        event, data = parse_record(value, headers, key)  # the SDK parses it; its data passes the official schema
        assert key.decode() == event.get_subject() == data["subject"]["id"]
    created, updated, closed = ours(records)
    assert [d["context"]["type"] for d in (created, updated, closed)] == [
        "dev.cdevents.approval.created.0.1.0",
        "dev.cdevents.approval.updated.0.1.0",
        "dev.cdevents.approval.closed.0.1.0",
    ]
    assert {d["context"]["chainId"] for d in (created, updated, closed)} == {chain_id(execution_id)}
    assert created["subject"]["content"]["requestor"] == "urn:signoff:user:alice"
    assert (updated["subject"]["content"]["responder"], updated["subject"]["content"]["decision"]) == (
        "urn:signoff:user:dana",
        "approved",
    )
    assert closed["subject"]["content"]["status"] == "approved"
    content = created["subject"]["content"]
    api_url = read_env_file(system.work / "dev" / ENV_FILE)["SIGNOFF_API_URL"]
    assert content["approvalDetailsUrl"] == f"{api_url}/gates/{gate_id}"
    # The resource URL is the api's answer about this very execution.
    request = urllib.request.Request(  # noqa: S310 (the stack's own http://127.0.0.1 URL)
        content["resourceTargetUrl"], headers={"Authorization": f"Bearer {system.token('alice')}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        assert json.loads(answer.read())["execution_id"] == execution_id
