"""Hostile input on the real api, broker and PostgreSQL: a NUL character (which no text column can store) in any
string a client sends, JSON nested deeper than the parser goes, and two credentials in one request are refused with
the endpoint's own error shape (a problem naming the field, CodePipeline's or Harness's error) -- never a 500, and
nothing published. One front door for the whole module: every test uses fresh gates and names."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from signoff.api.access_keys import SecretBox, issue_access_key, new_credentials_key
from signoff.api.repository import ApiRepository
from tests.conftest import Names, fresh_database, infra_settings
from tests.integration.api.conftest import FrontDoor, pipeline_name, running_front_door
from tests.integration.approval.conftest import request
from tests.support.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CREDENTIALS_KEY = new_credentials_key()
DEEP = b"[" * 5000 + b"]" * 5000
NUL = "a\x00b"
TARGET = "CodePipeline_20150709."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def door(
    infra: Infra, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FrontDoor]:
    """The front door on a database of this module's own (the per-test fixtures are function-scoped)."""
    tmp_path: Path = tmp_path_factory.mktemp("hostile")
    async with fresh_database(infra, template_database) as url:
        settings = infra_settings(infra, url)
        async with running_front_door(settings, Names(), tmp_path, api_credentials_key=CREDENTIALS_KEY) as front:
            yield front


async def open_gate(door: FrontDoor) -> str:
    gate_id, _ = await door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    return gate_id


def assert_problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == code, body
    if field is not None:
        assert body["errors"][0]["field"] == field, body
        assert field in body["detail"]


# ------------------------------------------------------------------------------------------------ REST /api/v1


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"status": "Approved"}, {"gate_id": NUL, "status": "Approved"}], "decisions[1].gate_id"),
        ([{"gate_id": NUL, "status": "Approved"}], "decisions[0].gate_id"),
        ([{"status": "Approved"}, {"status": "Approved", "comment": NUL}], "decisions[1].comment"),
        ([{"status": "Approved", "inputs": {"k": NUL}}], "decisions[0].inputs.k"),
    ],
)
async def test_a_bulk_item_holding_a_nul_refuses_the_whole_request_before_any_vote(
    door: FrontDoor, items: list[dict], field: str
) -> None:
    gate_id = await open_gate(door)
    decisions = [{"gate_id": gate_id, **item} for item in items]
    async with await door.client("dana") as dana:
        answer = await dana.post("/decisions/bulk", json={"decisions": decisions})
        audit = (await dana.get(f"/gates/{gate_id}/audit")).json()
        gate = (await dana.get(f"/gates/{gate_id}")).json()
    assert_problem(answer, 422, "invalid_decision", field)
    assert [e for e in audit["entries"] if e["kind"] in ("vote", "refused")] == []
    assert (gate["status"], gate["votes"]) == ("pending", [])


@pytest.mark.parametrize("field", ["pipelineName", "stageName", "actionName", "token"])
async def test_approval_results_refuse_a_nul_naming_the_field(door: FrontDoor, field: str) -> None:
    body = {
        "pipelineName": "p",
        "stageName": "s",
        "actionName": "a",
        "token": "t",
        "result": {"status": "Approved", "summary": ""},
    }
    async with await door.client("dana") as dana:
        answer = await dana.post("/approval-results", json={**body, field: NUL})
        summary = await dana.post("/approval-results", json={**body, "result": {"status": "Approved", "summary": NUL}})
    assert_problem(answer, 422, "invalid_request", field)
    assert_problem(summary, 422, "invalid_request", "result.summary")


async def test_approval_results_take_a_summary_of_at_most_512_characters_as_codepipeline_does(
    door: FrontDoor,
) -> None:
    body = {"pipelineName": "p", "stageName": "s", "actionName": "a", "token": "t"}
    async with await door.client("dana") as dana:
        longest = await dana.post(
            "/approval-results", json={**body, "result": {"status": "Approved", "summary": "x" * 512}}
        )
        over = await dana.post(
            "/approval-results", json={**body, "result": {"status": "Approved", "summary": "x" * 513}}
        )
    assert_problem(longest, 404, "unknown_gate")  # valid: no gate has that token
    assert_problem(over, 422, "invalid_request", "result.summary")


@pytest.mark.parametrize("gate_id", [NUL, "g"])
async def test_a_cursor_holding_a_nul_is_an_invalid_cursor(door: FrontDoor, gate_id: str) -> None:
    opened = "2026-01-01T00:00:00+00:00" if gate_id != "g" else "2026-01-01T00:00:00\x00"
    cursor = base64.urlsafe_b64encode(f"{opened}|{gate_id}".encode()).decode()
    async with await door.client("dana") as dana:
        answer = await dana.get("/gates", params={"after": cursor})
        mine = await dana.get("/gates", params={"after": cursor, "mine": "true"})
    assert_problem(answer, 400, "invalid_cursor", "after")
    assert_problem(mine, 400, "invalid_cursor", "after")


async def test_an_abort_reason_holding_a_nul_is_refused_naming_reason(door: FrontDoor) -> None:
    async with await door.client("dana") as dana:
        answer = await dana.post("/executions/exec-1/abort", json={"reason": "stop\x00"})
    assert_problem(answer, 422, "invalid_request", "reason")


async def test_deeply_nested_json_is_a_bad_request_not_an_internal_error(door: FrontDoor) -> None:
    gate_id = await open_gate(door)
    async with await door.client("dana") as dana:
        answer = await dana.post(
            f"/gates/{gate_id}/decisions", content=DEEP, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "malformed_body"  # as for any body that is not JSON it can read


async def test_the_apis_answers_are_not_cached(door: FrontDoor) -> None:
    """They carry gate tokens, comments and script output."""
    gate_id = await open_gate(door)
    async with await door.client("dana") as dana:
        shown = await dana.get(f"/gates/{gate_id}")
        missing = await dana.get("/gates/no-such-gate")
    assert shown.status_code == 200 and "token" in shown.json()
    assert shown.headers["cache-control"] == missing.headers["cache-control"] == "no-store"


async def test_two_authorization_headers_prove_nobody(door: FrontDoor) -> None:
    gate_id = await open_gate(door)
    dana, bob = await door.token("dana"), await door.token("bob")
    async with await door.client(None) as anonymous:
        headers = [("Authorization", f"Bearer {dana}"), ("Authorization", f"Bearer {bob}")]
        me = await anonymous.get("/me", headers=headers)
        vote = await anonymous.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers=headers)
        alone = await anonymous.get("/me", headers=[("Authorization", f"Bearer {dana}")])
    assert_problem(me, 401, "invalid_token")
    assert_problem(vote, 401, "invalid_token")
    assert "one Authorization header" in me.json()["detail"]
    assert alone.status_code == 200 and alone.json()["user"] == "dana"
    async with await door.client("dana") as client:
        audit = (await client.get(f"/gates/{gate_id}/audit")).json()
    assert [(e["kind"], e["reason"]) for e in audit["entries"] if e["kind"] in ("vote", "denied")] == [
        ("denied", "invalid_token")
    ]


# ------------------------------------------------------------------------------------------------ Harness


def harness_paths(gate_id: str) -> list[str]:
    return [
        f"/pipeline/api/approvals/{gate_id}/harness/activity",
        f"/pipeline/api/v1/orgs/o/projects/p/approvals/execution/exec-{uuid.uuid4().hex[:8]}",
    ]


@pytest.mark.parametrize("which", [0, 1])
async def test_harness_answers_deep_json_and_nul_with_its_invalid_request(door: FrontDoor, which: int) -> None:
    gate_id = await open_gate(door)
    path = harness_paths(gate_id)[which]
    key = {"x-api-key": await door.token("dana")}
    async with httpx.AsyncClient(base_url=door.url, headers=key, timeout=60) as client:
        deep = await client.post(path, content=DEEP, headers={"Content-Type": "application/json"})
        nul = await client.post(path, json={"action": "APPROVE", "comments": NUL})
    for answer in (deep, nul):
        assert answer.status_code == 400, answer.text
        assert (answer.json()["status"], answer.json()["code"]) == ("ERROR", "INVALID_REQUEST")
    assert "not JSON" in deep.json()["message"]
    assert nul.json()["message"].startswith("comments: ") and "NUL" in nul.json()["message"]


async def test_harness_refuses_two_api_keys(door: FrontDoor) -> None:
    gate_id = await open_gate(door)
    keys = [("x-api-key", await door.token("dana")), ("x-api-key", await door.token("eli"))]
    async with httpx.AsyncClient(base_url=door.url, timeout=60) as client:
        answer = await client.post(harness_paths(gate_id)[0], json={"action": "APPROVE"}, headers=keys)
        gate = (await client.get(f"/api/v1/gates/{gate_id}", headers={"Authorization": f"Bearer {keys[0][1]}"})).json()
    assert answer.status_code == 401, answer.text
    assert answer.json()["code"] == "INVALID_TOKEN" and "one x-api-key" in answer.json()["message"]
    assert gate["votes"] == []


# ------------------------------------------------------------------------------------------------ CodePipeline


async def access_key(door: FrontDoor, user: str) -> Credentials:
    async with door.pool.acquire() as conn:
        key, secret = await issue_access_key(
            conn, ApiRepository(), SecretBox.from_key(CREDENTIALS_KEY), user=user, now=datetime.now(UTC)
        )
    return Credentials(key.id, secret)


def signed(door: FrontDoor, credentials: Credentials, operation: str, body: bytes) -> dict:
    aws = AWSRequest(
        method="POST",
        url=f"{door.url}/",
        data=body,
        headers={"X-Amz-Target": TARGET + operation, "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(credentials, "codepipeline", "us-east-1").add_auth(aws)
    prepared = aws.prepare()
    return {"content": prepared.body, "headers": list(prepared.headers.items())}


async def test_codepipeline_answers_deep_json_as_malformed_json_signed_or_not(door: FrontDoor) -> None:
    credentials = await access_key(door, "dana")
    headers = {"X-Amz-Target": TARGET + "PutApprovalResult", "Content-Type": "application/x-amz-json-1.1"}
    async with httpx.AsyncClient(base_url=door.url, timeout=60) as client:
        unsigned_deep = await client.post("/", content=DEEP, headers=headers)
        unsigned_broken = await client.post("/", content=b"{not json", headers=headers)
        deep = await client.post("/", **signed(door, credentials, "GetPipelineState", DEEP))
        broken = await client.post("/", **signed(door, credentials, "GetPipelineState", b"{not json"))
    assert unsigned_deep.status_code == unsigned_broken.status_code == 403
    assert unsigned_deep.json()["__type"] == unsigned_broken.json()["__type"] == "MissingAuthenticationTokenException"
    assert deep.status_code == broken.status_code == 400
    assert deep.json() == broken.json() == {"__type": "SerializationException", "message": deep.json()["message"]}


async def test_codepipeline_refuses_nul_in_names_tokens_and_next_tokens(door: FrontDoor) -> None:
    credentials = await access_key(door, "dana")
    nul_name = (
        b'{"pipelineName": "a\\u0000b", "stageName": "s", "actionName": "a", "token": "t",'
        b' "result": {"status": "Approved", "summary": ""}}'
    )
    nul_summary = (
        b'{"pipelineName": "p", "stageName": "s", "actionName": "a", "token": "t",'
        b' "result": {"status": "Approved", "summary": "a\\u0000"}}'
    )
    next_token = base64.urlsafe_b64encode(b"a\x00b").decode()
    async with httpx.AsyncClient(base_url=door.url, timeout=60) as client:
        name = await client.post("/", **signed(door, credentials, "PutApprovalResult", nul_name))
        summary = await client.post("/", **signed(door, credentials, "PutApprovalResult", nul_summary))
        page = await client.post(
            "/", **signed(door, credentials, "ListPipelines", f'{{"nextToken": "{next_token}"}}'.encode())
        )
        # Refused for its signature, so its audit looks up the gate it names: a NUL names none.
        unsigned = await client.post("/", content=nul_name, headers={"X-Amz-Target": TARGET + "PutApprovalResult"})
    assert (name.status_code, name.json()["__type"]) == (400, "ValidationException")
    assert "'pipelineName'" in name.json()["message"]
    assert (summary.status_code, summary.json()["__type"]) == (400, "ValidationException")
    assert "'result.summary'" in summary.json()["message"]
    assert (page.status_code, page.json()["__type"]) == (400, "InvalidNextTokenException")
    assert (unsigned.status_code, unsigned.json()["__type"]) == (403, "MissingAuthenticationTokenException")


async def test_codepipeline_refuses_two_authorization_headers(door: FrontDoor) -> None:
    dana, eli = await access_key(door, "dana"), await access_key(door, "eli")
    body = b'{"name": "p"}'
    first, second = signed(door, dana, "GetPipelineState", body), signed(door, eli, "GetPipelineState", body)
    twice = [*first["headers"], *(item for item in second["headers"] if item[0].lower() == "authorization")]
    async with httpx.AsyncClient(base_url=door.url, timeout=60) as client:
        alone = await client.post("/", **first)
        both = await client.post("/", content=body, headers=twice)
    assert alone.status_code == 400 and alone.json()["__type"] == "PipelineNotFoundException"
    assert (both.status_code, both.json()["__type"]) == (403, "InvalidSignatureException")
