"""Deciding through the api on the real broker and PostgreSQL: the token's user is the approver, the approval
service judges, and the answer carries its verdict."""

from __future__ import annotations

import asyncio

import pytest

from signoff import contracts as wire
from tests.integration.api.conftest import FrontDoor, pipeline_name
from tests.integration.approval.conftest import request

pytestmark = pytest.mark.integration


async def test_a_member_approves_as_herself_and_the_answer_carries_the_verdict(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client("dana") as dana:
        answer = await dana.post(f"/gates/{gate_id}/decisions", json={"status": "Approved", "comment": "ship it"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["outcome"], body["approver"], body["gate_status"]) == ("counted", "dana", "approved")
    assert "1 of 1 approver" in body["progress"]

    async with await front_door.client("eli") as eli:
        audit = (await eli.get(f"/gates/{gate_id}/audit")).json()
    votes = [entry for entry in audit["entries"] if entry["kind"] == "vote"]
    assert [(v["actor"], v["source"]) for v in votes] == [("dana", "api")]


async def test_a_non_member_is_refused_not_eligible_with_403(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client("bob") as bob:
        answer = await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"})
        gate = (await bob.get(f"/gates/{gate_id}")).json()
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "not_eligible"
    assert gate["status"] == "pending" and gate["you"] == {
        "may_decide": False,
        "reason": "not_eligible",
        "current_vote": None,
    }


async def test_the_pipeline_executor_is_refused_self_approval(front_door: FrontDoor) -> None:
    req = request(pipeline=pipeline_name(), groups=("sre",), executor="alice", disallow_executor=True, timeout="1d")
    gate_id, _ = await front_door.open_gate(req)
    async with await front_door.client("alice") as alice:
        answer = await alice.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"})
    assert (answer.status_code, answer.json()["code"]) == (403, "self_approval")


async def test_a_second_vote_replaces_the_first_and_says_so_with_the_progress(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(
        request(pipeline=pipeline_name(), groups=("sre",), minimum_count=2, timeout="1d")
    )
    async with await front_door.client("bob") as bob:
        first = (await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"})).json()
        second = (await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved", "comment": "again"})).json()
    assert first["replaced_earlier_vote"] is False and "1 of 2 approvers" in first["progress"]
    assert second["replaced_earlier_vote"] is True
    assert "replacing their earlier vote" in second["message"] and "1 of 2 approvers" in second["message"]
    assert second["gate_status"] == "pending"


async def test_a_repeated_idempotency_key_returns_the_first_answer_and_records_nothing_new(
    front_door: FrontDoor,
) -> None:
    gate_id, _ = await front_door.open_gate(
        request(pipeline=pipeline_name(), groups=("sre",), minimum_count=2, timeout="1d")
    )
    async with await front_door.client("bob") as bob:
        headers = {"Idempotency-Key": "retry-1"}
        first = await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers=headers)
        again = await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers=headers)
        other = await bob.post(f"/gates/{gate_id}/decisions", json={"status": "Rejected"}, headers=headers)
        audit = (await bob.get(f"/gates/{gate_id}/audit")).json()
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert [e["kind"] for e in audit["entries"] if e["kind"] in ("vote", "refused")] == ["vote"]


async def test_concurrent_requests_with_one_idempotency_key_send_the_decision_once(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(
        request(pipeline=pipeline_name(), groups=("sre",), minimum_count=2, timeout="1d")
    )
    async with await front_door.client("bob") as bob:
        headers = {"Idempotency-Key": "retry-storm"}
        answers = await asyncio.gather(
            *(bob.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers=headers) for _ in range(8))
        )
        audit = (await bob.get(f"/gates/{gate_id}/audit")).json()
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["decision_id"] for answer in answers}) == 1
    # One decision reached the approval service: no repeat of it was refused as a duplicate.
    assert [e["kind"] for e in audit["entries"] if e["kind"] in ("vote", "refused")] == ["vote"]


async def test_bad_credentials_get_401_with_www_authenticate_and_are_audited(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client(None) as anonymous:
        missing = await anonymous.post(f"/gates/{gate_id}/decisions", json={"status": "Approved"})
        forged = await anonymous.post(
            f"/gates/{gate_id}/decisions",
            json={"status": "Approved"},
            headers={"Authorization": "Bearer sgf_" + "x" * 43},
        )
    assert missing.status_code == forged.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    async with await front_door.client("dana") as dana:
        audit = (await dana.get(f"/gates/{gate_id}/audit")).json()
    denied = [(e["kind"], e["reason"]) for e in audit["entries"] if e["kind"] == "denied"]
    assert denied == [("denied", "missing_credentials"), ("denied", "invalid_token")]


async def test_repeated_refusals_naming_a_gate_are_counted_on_one_audit_entry_not_one_each(
    front_door: FrontDoor,
) -> None:
    # A gate's id is in every notification: anyone can send requests naming it, unauthenticated.
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client(None) as anonymous:
        for _ in range(30):
            assert (await anonymous.get(f"/gates/{gate_id}")).status_code == 401
        forged = await anonymous.get(f"/gates/{gate_id}", headers={"Authorization": "Bearer sgf_" + "x" * 43})
    assert forged.status_code == 401
    async with await front_door.client("dana") as dana:
        audit = (await dana.get(f"/gates/{gate_id}/audit")).json()
    denied = [entry for entry in audit["entries"] if entry["kind"] == "denied"]
    assert [(e["reason"], e["detail"].get("repeated")) for e in denied] == [
        ("missing_credentials", 29),
        ("invalid_token", None),
    ]
    assert denied[0]["text"].endswith("(and 29 more like it, each within a minute of the last)")


async def test_bad_input_gets_a_problem_naming_the_field(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client("dana") as dana:
        maybe = await dana.post(f"/gates/{gate_id}/decisions", json={"status": "Maybe"})
        broken = await dana.post(
            f"/gates/{gate_id}/decisions", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        huge = await dana.post(f"/gates/{gate_id}/decisions", content=b"x" * (1_048_577))

        async def chunks():  # no Content-Length: chunked, so only the stream's length tells
            for _ in range(17):
                yield b"x" * 65_536

        chunked = await dana.post(
            f"/gates/{gate_id}/decisions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        as_text = await dana.post(
            f"/gates/{gate_id}/decisions", content=b'{"status": "Approved"}', headers={"Content-Type": "text/plain"}
        )
        as_form = await dana.post(f"/gates/{gate_id}/decisions", data={"status": "Approved"})
        unknown = await dana.post("/gates/no-such-gate/decisions", json={"status": "Approved"})
        # PostgreSQL's text cannot hold NUL: refused here, naming the field, not lost on the way to the database.
        nul = await dana.post(f"/gates/{gate_id}/decisions", json={"status": "Approved", "comment": "a\x00b"})
        nul_input = await dana.post(
            f"/gates/{gate_id}/decisions", json={"status": "Approved", "inputs": {"foo": "\x00"}}
        )
        nul_path = await dana.get("/gates/%00")
        nul_query = await dana.get("/gates", params={"pipeline": "\x00"})
    assert maybe.status_code == 422 and maybe.json()["errors"][0]["field"] == "status"
    assert broken.status_code == 400 and broken.json()["code"] == "malformed_body"
    assert broken.json()["errors"][0]["field"] == "body" and "at character 1" in broken.json()["detail"]
    assert huge.status_code == 413 and huge.json()["code"] == "too_large"
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and chunked.json()["code"] == "too_large"
    for not_json in (as_text, as_form):  # read as no object at all, this was a misleading 422 "body"
        assert (not_json.status_code, not_json.json()["code"]) == (415, "unsupported_media_type")
        assert not_json.json()["errors"][0]["field"] == "Content-Type"
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_gate"
    assert (nul.status_code, nul.json()["code"], nul.json()["errors"][0]["field"]) == (
        422,
        "invalid_decision",
        "comment",
    )
    assert "NUL" in nul.json()["detail"] and nul_input.json()["errors"][0]["field"] == "inputs.foo"
    assert (nul_path.status_code, nul_path.json()["errors"][0]["field"]) == (400, "path")
    assert (nul_query.status_code, nul_query.json()["errors"][0]["field"]) == (400, "query")
    for answer in (maybe, broken, huge, chunked, as_text, as_form, unknown, nul, nul_input, nul_path, nul_query):
        assert answer.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in answer.text


async def test_mine_lists_only_the_gates_i_may_decide_newest_first(front_door: FrontDoor) -> None:
    pipeline = pipeline_name()
    docs_gate, _ = await front_door.open_gate(request(pipeline=pipeline, groups=("docs",), timeout="1d"))
    sre_gate, _ = await front_door.open_gate(request(pipeline=pipeline, groups=("sre",), timeout="1d"))
    async with await front_door.client("dana") as dana:
        mine = (await dana.get("/gates", params={"mine": "true", "pipeline": pipeline})).json()["gates"]
        everything = (await dana.get("/gates", params={"pipeline": pipeline})).json()["gates"]
    assert [g["gate_id"] for g in mine] == [docs_gate]
    assert {g["gate_id"] for g in everything} == {docs_gate, sre_gate}


async def test_mine_filters_by_pipeline_and_group_before_the_page_is_cut(front_door: FrontDoor) -> None:
    """A page of one is the newest gate that matches, though newer gates of dana's do not: the filters are part of
    the query, not applied to a page already cut (which came back empty, with no next)."""
    pipeline = pipeline_name()
    wanted, _ = await front_door.open_gate(request(pipeline=pipeline, groups=("docs",), timeout="1d"))
    for _ in range(2):  # newer gates dana may decide, of another pipeline
        await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client("dana") as dana:
        by_pipeline = await dana.get("/gates", params={"mine": "true", "pipeline": pipeline, "limit": 1})
        by_group = await dana.get("/gates", params={"mine": "true", "group": "docs", "limit": 2})
        other_group = await dana.get("/gates", params={"mine": "true", "group": "sre", "pipeline": pipeline})
        closed = await dana.get("/gates", params={"mine": "true", "status": "approved"})
    assert [g["gate_id"] for g in by_pipeline.json()["gates"]] == [wanted]
    assert len(by_group.json()["gates"]) == 2 and by_group.json()["next"] is not None
    assert other_group.json() == {"gates": [], "next": None}
    assert (closed.status_code, closed.json()["errors"][0]["field"]) == (422, "status")


async def test_a_service_principal_decides_for_a_user_only_with_the_permission_and_the_audit_names_both(
    front_door: FrontDoor,
) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with await front_door.client("chatbot") as plain:
        refused = await plain.post(f"/gates/{gate_id}/decisions", json={"status": "Approved", "on_behalf_of": "dana"})
    assert (refused.status_code, refused.json()["code"]) == (403, "not_permitted")
    async with await front_door.client("chatbot", "act_on_behalf") as bot:
        answer = await bot.post(
            f"/gates/{gate_id}/decisions", json={"status": "Approved", "on_behalf_of": "dana", "comment": "via chat"}
        )
        audit = (await bot.get(f"/gates/{gate_id}/audit")).json()
    assert answer.status_code == 200, answer.text
    assert (answer.json()["approver"], answer.json()["gate_status"]) == ("dana", "approved")
    (vote,) = [entry for entry in audit["entries"] if entry["kind"] == "vote"]
    assert (vote["actor"], vote["detail"]["submitted_by"]) == ("dana", "chatbot")
    assert "dana approved via api (submitted by chatbot)" in vote["text"]


async def test_a_gate_document_has_the_message_progress_inputs_and_your_turn(front_door: FrontDoor) -> None:
    req = request(pipeline=pipeline_name(), groups=("sre",), minimum_count=2, timeout="1d").model_copy(
        update={
            "message": "Deploy 2.0.0 to <+env.name>?\nSecond line",
            "approver_inputs": [
                wire.ApproverInput(name="region", defaultValue="eu", allowedValues=["eu", "us"], required=True)
            ],
        }
    )
    gate_id, token = await front_door.open_gate(req)
    async with await front_door.client("bob") as bob:
        await bob.post(
            f"/gates/{gate_id}/decisions", json={"status": "Approved", "comment": "ok", "inputs": {"region": "us"}}
        )
        gate = (await bob.get(f"/gates/{gate_id}")).json()
    assert gate["message"] == "Deploy 2.0.0 to <+env.name>?\nSecond line"
    assert gate["token"] == token and gate["status"] == "pending"
    assert (
        gate["policy"]["rules"][0]["approved_by"] == ["bob"]
        and gate["policy"]["text"] == "1 of 2 approvers (group sre)"
    )
    assert gate["inputs"] == [{"name": "region", "defaultValue": "eu", "required": True, "allowedValues": ["eu", "us"]}]
    assert [(v["approver"], v["comment"], v["inputs"]) for v in gate["votes"]] == [("bob", "ok", {"region": "us"})]
    assert gate["you"] == {"may_decide": True, "reason": None, "current_vote": "Approved"}
    assert gate["links"]["approve"].endswith(f"/gates/{gate_id}?action=approve")
    assert gate["current_stage"]["identifier"] == req.current_stage.identifier
    assert gate["time_left"].endswith("left")
