"""The seeds' own clients against `signoff api`, unchanged: the real AWS CLI (awscli) and boto3 with
`--endpoint-url` and a user's access key, and curl with Harness's `x-api-key`. The whole stack runs as processes
(`signoff dev up`); the only network target is 127.0.0.1, and nothing of the machine's AWS setup leaks in."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from signoff.runtime.devenv import ENV_FILE, read_env_file
from tests.e2e.conftest import SEED_DECISION, SHARED_STACK, System
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(SHARED_STACK)]  # the shared dev stack

REGION = "eu-west-1"
SEED_NAMES = {
    "checkout_blue_green": "MyFirstPipeline",
    "staging_blue_green": "MyApprovalStage",
    "Harness_Approval_Step": "MyApprovalAction",
}


def api_url(system: System) -> str:
    return read_env_file(system.work / "dev" / ENV_FILE)["SIGNOFF_API_URL"]


def access_key(system: System, user: str) -> tuple[str, str]:
    """`signoff dev access-key USER`: AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… on stdout."""
    lines = dict(line.split("=", 1) for line in system.admin("dev", "access-key", user).stdout.split())
    return lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"]


def aws_env(system: System, key: tuple[str, str]) -> dict[str, str]:
    """Only these keys, this region, and empty config files: nothing of the machine's AWS setup."""
    empty = system.work / "aws-empty"
    empty.write_text("")
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(system.work / "home"),
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def aws(system: System, key: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real AWS CLI v1: `aws codepipeline ARGS --endpoint-url <the api>`."""
    return subprocess.run(
        [sys.executable, "-m", "awscli", "codepipeline", *args, "--endpoint-url", api_url(system)],
        capture_output=True,
        text=True,
        timeout=120,
        env=aws_env(system, key),
        check=False,
        cwd=system.work,
    )


def start(system: System, name: str, renames: dict[str, str]) -> str:
    path = system.pipeline(name, renames=renames)
    return system.signoff("run", str(path), "--var", "tag=2.0.0", user="alice").stdout.strip()


def audit(system: System, gate_id: str) -> list[dict]:
    return json.loads(system.signoff("audit", gate_id, "--json", user="dana").stdout)["entries"]


@pytest.mark.timeout(300)  # some fifteen AWS CLI processes (botocore loads its models each time) on a busy machine
def test_the_aws_cli_reads_the_token_and_approves_with_the_seed_file(system: System):
    dana, bob = access_key(system, "dana"), access_key(system, "bob")
    execution_id = start(system, "seed-cli", SEED_NAMES)

    def waiting():
        shown = aws(system, dana, "get-pipeline-state", "--name", "MyFirstPipeline")
        if shown.returncode != 0:
            return None
        for stage in json.loads(shown.stdout)["stageStates"]:
            for action in stage["actionStates"]:
                if "token" in action.get("latestExecution", {}):
                    return stage, action
        return None

    stage, action = eventually_sync(waiting, timeout=90, what="the approval's token in get-pipeline-state")
    latest = action["latestExecution"]
    assert (stage["stageName"], action["actionName"], latest["status"]) == (
        "MyApprovalStage",
        "MyApprovalAction",
        "InProgress",
    )
    gate_id = latest["externalExecutionId"]
    assert latest["externalExecutionUrl"] == action["entityUrl"] == f"{api_url(system)}/gates/{gate_id}"

    # The seed's file with our token; everything else as the seed has it.
    approved = system.work / "approvalstage-approved.json"
    approved.write_text(json.dumps(SEED_DECISION | {"token": latest["token"]}))
    seed_file = f"file://{approved}"
    wrong = system.work / "wrong-token.json"
    wrong.write_text(json.dumps(SEED_DECISION | {"token": "0123456789abcdefABCDEF-_wrongtoken"}))
    not_a_token = system.work / "not-a-token.json"
    not_a_token.write_text(json.dumps(SEED_DECISION | {"token": "not a token!"}))

    by_bob = aws(system, bob, "put-approval-result", "--cli-input-json", seed_file)
    assert by_bob.returncode == 255 and "ValidationException" in by_bob.stderr, by_bob.stderr
    assert "not_eligible" in by_bob.stderr
    stale = aws(system, dana, "put-approval-result", "--cli-input-json", f"file://{wrong}")
    assert stale.returncode == 255 and "InvalidApprovalTokenException" in stale.stderr, stale.stderr
    malformed = aws(system, dana, "put-approval-result", "--cli-input-json", f"file://{not_a_token}")
    assert malformed.returncode == 255 and "ValidationException" in malformed.stderr, malformed.stderr
    forged = aws(system, (dana[0], dana[1][:-4] + "XXXX"), "put-approval-result", "--cli-input-json", seed_file)
    assert forged.returncode == 255 and "InvalidSignatureException" in forged.stderr, forged.stderr
    maybe = system.work / "maybe.json"
    maybe.write_text(
        json.dumps(SEED_DECISION | {"token": latest["token"], "result": {"status": "Maybe", "summary": ""}})
    )
    assert (
        "ValidationException" in aws(system, dana, "put-approval-result", "--cli-input-json", f"file://{maybe}").stderr
    )

    answered = aws(system, dana, "put-approval-result", "--cli-input-json", seed_file)
    assert answered.returncode == 0, answered.stderr
    assert "approvedAt" in json.loads(answered.stdout)
    again = aws(system, dana, "put-approval-result", "--cli-input-json", seed_file)
    assert again.returncode == 255 and "ApprovalAlreadyCompletedException" in again.stderr, again.stderr

    system.wait_status(execution_id, "SUCCEEDED")
    assert "foo is bar" in system.signoff("logs", execution_id).stdout
    pipelines = json.loads(aws(system, dana, "list-pipelines").stdout)["pipelines"]
    assert "MyFirstPipeline" in [p["name"] for p in pipelines]
    runs = json.loads(aws(system, dana, "list-pipeline-executions", "--pipeline-name", "MyFirstPipeline").stdout)
    assert runs["pipelineExecutionSummaries"][0]["pipelineExecutionId"] == execution_id
    run = json.loads(
        aws(
            system,
            dana,
            "get-pipeline-execution",
            "--pipeline-name",
            "MyFirstPipeline",
            "--pipeline-execution-id",
            execution_id,
        ).stdout
    )["pipelineExecution"]
    assert run["status"] == "Succeeded" and run["trigger"]["triggerDetail"] == "alice"

    # Every refusal is in the gate's audit trail, with who tried.
    entries = audit(system, gate_id)
    refused = {(e["reason"], e["actor"]) for e in entries if e["kind"] == "refused"}
    assert {("not_eligible", "bob"), ("stale_token", "dana"), ("gate_closed", "dana")} <= refused, entries
    (denied,) = [e for e in entries if e["kind"] == "denied"]
    assert denied["reason"] == "InvalidSignatureException" and dana[0] in denied["text"], denied
    votes = [e for e in entries if e["kind"] == "vote"]
    assert [v["actor"] for v in votes] == ["dana"]  # one vote, however often the CLI sent it


def test_boto3_does_the_same_from_python(system: System):
    dana, bob = access_key(system, "dana"), access_key(system, "bob")
    names = {"checkout_blue_green": "BotoPipeline", "staging_blue_green": "Stage", "Harness_Approval_Step": "Gate"}
    execution_id = start(system, "boto", names)

    def client(key: tuple[str, str]):
        return boto3.session.Session(aws_access_key_id=key[0], aws_secret_access_key=key[1], region_name=REGION).client(
            "codepipeline", endpoint_url=api_url(system), config=Config(retries={"max_attempts": 2})
        )

    def waiting():
        try:
            state = client(dana).get_pipeline_state(name="BotoPipeline")
        except ClientError:
            return None
        for stage in state["stageStates"]:
            for action in stage["actionStates"]:
                if "token" in action.get("latestExecution", {}):
                    return action["latestExecution"]
        return None

    latest = eventually_sync(waiting, timeout=90, what="BotoPipeline's token")

    def raw(target: str | None, body: bytes, *, sign: bool = True, extra: dict | None = None) -> httpx.Response:
        """A request by hand (signed with dana's key by botocore's signer unless `sign` is false)."""
        headers = {"Content-Type": "application/x-amz-json-1.1", **(extra or {})}
        if target:
            headers["X-Amz-Target"] = target
        request = AWSRequest(method="POST", url=f"{api_url(system)}/", data=body, headers=headers)
        if sign:
            SigV4Auth(Credentials(*dana), "codepipeline", REGION).add_auth(request)
        prepared = request.prepare()
        return httpx.post(prepared.url, content=body, headers=dict(prepared.headers.items()))

    decision = {
        "pipelineName": "BotoPipeline",
        "stageName": "Stage",
        "actionName": "Gate",
        "token": latest["token"],
        "result": {"status": "Approved", "summary": "from boto3"},
    }

    def error_of(call) -> ClientError:
        with pytest.raises(ClientError) as raised:
            call()
        return raised.value

    refused = error_of(lambda: client(bob).put_approval_result(**decision))
    assert refused.response["Error"]["Code"] == "ValidationException"
    assert "not_eligible" in refused.response["Error"]["Message"]
    stale = error_of(lambda: client(dana).put_approval_result(**(decision | {"token": "abc-def"})))
    assert stale.response["Error"]["Code"] == "InvalidApprovalTokenException"
    forged = error_of(lambda: client((dana[0], "wrong-secret")).put_approval_result(**decision))
    assert forged.response["Error"]["Code"] == "InvalidSignatureException"
    assert forged.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = error_of(lambda: client(("SGFKNOSUCHKEY0000000", "x")).get_pipeline_state(name="BotoPipeline"))
    assert unknown.response["Error"]["Code"] == "UnrecognizedClientException"
    missing = error_of(lambda: client(dana).get_pipeline_state(name="NoSuchPipeline"))
    assert missing.response["Error"]["Code"] == "PipelineNotFoundException"
    no_stage = error_of(lambda: client(dana).put_approval_result(**(decision | {"stageName": "Nope"})))
    assert no_stage.response["Error"]["Code"] == "StageNotFoundException"

    sent: list[dict[str, str]] = []
    approving = client(dana)
    approving.meta.events.register("before-send", lambda request, **_: sent.append(dict(request.headers.items())))
    answer = approving.put_approval_result(**decision)
    assert answer["approvedAt"].year >= 2024
    # A retry of that call (botocore re-signs it and keeps its invocation id) is the same vote: the same answer.
    invocation = sent[-1]["amz-sdk-invocation-id"]
    invocation = invocation.decode() if isinstance(invocation, bytes) else invocation
    retried = raw(
        "CodePipeline_20150709.PutApprovalResult",
        json.dumps(decision).encode(),
        extra={"amz-sdk-invocation-id": invocation, "amz-sdk-request": "attempt=2; max=2"},
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["approvedAt"] == pytest.approx(answer["approvedAt"].timestamp(), abs=0.001)
    again = error_of(lambda: client(dana).put_approval_result(**decision))
    assert again.response["Error"]["Code"] == "ApprovalAlreadyCompletedException"
    system.wait_status(execution_id, "SUCCEEDED")
    (vote,) = [e for e in audit(system, latest["externalExecutionId"]) if e["kind"] == "vote"]
    assert vote["actor"] == "dana"

    # Paging as botocore's paginators do it: one item a page gives what one page of all gives.
    reader = client(dana)
    everything = [p["name"] for p in reader.list_pipelines()["pipelines"]]
    paged = reader.get_paginator("list_pipelines").paginate(PaginationConfig={"PageSize": 1})
    assert [p["name"] for page in paged for p in page["pipelines"]] == everything and "BotoPipeline" in everything
    second = start(system, "boto", names)

    def both_runs():
        runs = reader.get_paginator("list_pipeline_executions").paginate(
            pipelineName="BotoPipeline", PaginationConfig={"PageSize": 1}
        )
        ids = [run["pipelineExecutionId"] for page in runs for run in page["pipelineExecutionSummaries"]]
        return ids if len(ids) == 2 else None

    assert eventually_sync(both_runs, timeout=60, what="both BotoPipeline runs") == [second, execution_id]
    garbage = error_of(lambda: reader.list_pipelines(nextToken="!!not-ours!!"))
    assert garbage.response["Error"]["Code"] == "InvalidNextTokenException"

    unknown_op = raw("CodePipeline_20150709.DeletePipeline", b"{}")
    assert (unknown_op.status_code, unknown_op.json()["__type"]) == (400, "UnknownOperationException")
    garbled = raw("CodePipeline_20150709.GetPipelineState", b"{not json")
    assert (garbled.status_code, garbled.json()["__type"]) == (400, "SerializationException")
    unsigned = raw("CodePipeline_20150709.GetPipelineState", b'{"name": "BotoPipeline"}', sign=False)
    assert (unsigned.status_code, unsigned.json()["__type"]) == (403, "MissingAuthenticationTokenException")


def curl(
    system: System,
    method: str,
    path: str,
    key: str | None,
    body: dict | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict | list]:
    args = ["curl", "-sS", "-X", method, f"{api_url(system)}{path}"]
    if key is not None:
        args += ["-H", f"x-api-key: {key}"]
    if body is not None:
        args += ["-H", f"Content-Type: {content_type}", "-d", json.dumps(body)]
    done = subprocess.run([*args, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=120, check=True)
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text)


def test_curl_approves_and_rejects_through_harness_endpoints(system: System):
    names = {"checkout_blue_green": "HarnessPipeline"}
    # Two of docs must approve, so one user acting twice can be seen.
    quorum = system.pipeline(
        "harness-approve",
        renames=names,
        approvers={"userGroups": ["docs"], "minimumCount": 2, "disallowPipelineExecutor": False},
    )
    execution_id = system.signoff("run", str(quorum), "--var", "tag=2.0.0", user="alice").stdout.strip()
    waiting = system.waiting_approval("HarnessPipeline")
    gate_id = waiting["externalExecutionId"]
    activity = f"/pipeline/api/approvals/{gate_id}/harness/activity"
    approve = {"action": "APPROVE", "approverInputs": [{"name": "foo", "value": "from-curl"}], "comments": "ok"}
    # curl -d without a JSON Content-Type (a form post) is no vote.
    form = "application/x-www-form-urlencoded"
    status, refused = curl(system, "POST", activity, system.token("dana"), approve, content_type=form)
    assert status == 415 and refused["status"] == "ERROR" and "Content-Type: application/json" in refused["message"]

    status, denied = curl(system, "POST", activity, "sgf_" + "x" * 43, approve)
    assert (status, denied["status"], denied["code"]) == (401, "ERROR", "INVALID_TOKEN"), denied
    status, anonymous = curl(system, "POST", activity, None, approve)
    assert (status, anonymous["status"], anonymous["code"]) == (401, "ERROR", "INVALID_TOKEN"), anonymous
    status, refused = curl(system, "POST", activity, system.token("bob"), approve)
    assert status == 400 and "not_eligible" in refused["message"], refused
    first = {"action": "APPROVE", "approverInputs": [{"name": "foo", "value": "from-dana"}], "comments": "one"}
    status, answer = curl(system, "POST", activity, system.token("dana"), first)
    assert status == 200 and answer["status"] == "SUCCESS", answer
    assert answer["data"]["status"] == "WAITING" and answer["data"]["id"] == gate_id
    status, twice = curl(system, "POST", activity, system.token("dana"), approve)
    assert status == 400 and "already approved or rejected" in twice["message"], twice
    status, answer = curl(system, "POST", activity, system.token("eli"), approve)
    assert status == 200 and answer["data"]["status"] == "APPROVED", answer
    activities = answer["data"]["details"]["approvalActivities"]
    assert [a["user"]["name"] for a in activities] == ["dana", "eli"]
    # Their e-mails from the gate's directory snapshot (examples/directory.yaml).
    assert [a["user"]["email"] for a in activities] == ["dana@example.com", "eli@example.com"]
    assert activities[1]["approverInputs"] == approve["approverInputs"]
    status, late = curl(system, "POST", activity, system.token("carol"), approve)
    assert status == 400 and "already completed" in late["message"], late
    system.wait_status(execution_id, "SUCCEEDED")
    assert "foo is from-curl" in system.signoff("logs", execution_id).stdout

    entries = audit(system, gate_id)
    denied = {(e["reason"], e["actor"]) for e in entries if e["kind"] == "denied"}
    assert {("invalid_token", None), ("missing_credentials", None), ("already_acted", "dana")} <= denied, entries
    refusals = {(e["reason"], e["actor"]) for e in entries if e["kind"] == "refused"}
    assert {("not_eligible", "bob"), ("gate_closed", "carol")} <= refusals, entries

    # By execution id: the one waiting approval, listed with its inputs, then rejected.
    second = start(system, "harness-reject", names)
    system.waiting_approval("HarnessPipeline")
    by_execution = f"/pipeline/api/v1/orgs/default/projects/shop/approvals/execution/{second}"
    status, listed = curl(system, "GET", f"{by_execution}?approval_status=WAITING", system.token("dana"))
    assert status == 200 and len(listed) == 1, listed
    (instance,) = listed
    assert instance["status"] == "WAITING" and (instance["org"], instance["project"]) == ("default", "shop")
    assert instance["details"]["approverInputs"] == [{"name": "foo", "defaultValue": "bar"}]
    # Harness's other filter values: another approval type or FAILED match nothing; an unknown one is refused in
    # Harness's error shape.
    for query in ("approval_type=JiraApproval", "approval_status=FAILED"):
        status, nothing = curl(system, "GET", f"{by_execution}?{query}", system.token("dana"))
        assert (status, nothing) == (200, []), (query, nothing)
    status, odd = curl(system, "GET", f"{by_execution}?approval_status=PAUSED", system.token("dana"))
    assert status == 400 and odd["status"] == "ERROR" and "approval_status: one of" in odd["message"], odd
    reject = {"action": "REJECT", "approverInputs": [], "comments": "not today"}
    status, rejected = curl(system, "POST", by_execution, system.token("dana"), reject)
    assert status == 200 and rejected["status"] == "REJECTED", rejected
    system.wait_status(second, "FAILED")
    status, none_waiting = curl(system, "POST", by_execution, system.token("dana"), reject)
    assert status == 400 and "No approval is waiting" in none_waiting["message"]
