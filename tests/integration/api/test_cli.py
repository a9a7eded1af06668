"""The approver's CLI as a client of the api: each command runs with only SIGNOFF_API_URL and the user's
SIGNOFF_TOKEN (no database URL, no broker, no decision key), against the approval and api roles on the real broker
and PostgreSQL. Who decides is the token's user; there is no `--as`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result

from signoff.contracts.base import format_utc
from signoff.contracts.events import HistoryEntry
from tests.integration.api.conftest import FrontDoor, pipeline_name
from tests.integration.approval.conftest import START, request

pytestmark = pytest.mark.integration


def _one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


async def test_approve_and_reject_are_the_token_users_votes(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), timeout="1d"))
    result = await front_door.cli("bob", "approve", gate_id, "--comment", "ship it")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"vote counted: bob approved gate {gate_id}; 1 of 1 approver (group sre)")
    assert result.stdout.rstrip().endswith("gate is now approved")

    other, _ = await front_door.open_gate(request(pipeline=pipeline_name(), timeout="1d"))
    result = await front_door.cli("carol", "reject", other, "--comment", "not today")
    assert result.exit_code == 0, result.output
    assert "carol rejected" in result.stdout and "gate is now rejected" in result.stdout
    assert "--as" not in (await front_door.cli("bob", "approve", "--help")).stdout


async def test_the_codepipeline_json_file_approves_and_sending_it_again_is_refused(
    front_door: FrontDoor, tmp_path: Path
) -> None:
    req = request(pipeline=pipeline_name(), stage="approval_stage", step="approval_action", groups=("docs",))
    gate_id, token = await front_door.open_gate(req)
    doc = {
        "pipelineName": req.key.pipeline_id,
        "stageName": "approval_stage",
        "actionName": "approval_action",
        "token": token,
        "result": {"status": "Approved", "summary": "The new design looks good. Ready to release to customers."},
    }
    approved_file = tmp_path / "approvalstage-approved.json"
    approved_file.write_text(json.dumps(doc))

    result = await front_door.cli("dana", "put-approval-result", "--cli-input-json", f"file://{approved_file}")
    assert result.exit_code == 0, result.output
    assert f"dana approved gate {gate_id}" in result.stdout and "gate is now approved" in result.stdout

    again = await front_door.cli("eli", "put-approval-result", "--cli-input-json", f"file://{approved_file}")
    assert again.exit_code == 1
    assert _one_line_error(again).startswith("error: refused (gate_closed)")
    wrong = await front_door.cli(
        "eli", "put-approval-result", "--cli-input-json", f"file://{approved_file}", "--token", "not-the-token"
    )
    assert wrong.exit_code == 1 and "(unknown_gate)" in _one_line_error(wrong)


async def test_a_refused_vote_exits_1_with_the_reason(front_door: FrontDoor) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), timeout="1d"))
    result = await front_door.cli("mallory", "approve", gate_id)
    assert result.exit_code == 1
    assert _one_line_error(result).startswith("error: refused (not_eligible)")


async def test_pending_show_and_audit_through_the_api(front_door: FrontDoor) -> None:
    req = request(pipeline=pipeline_name(), timeout="1d", groups=("sre",), minimum_count=2)
    history = [
        {"stage_id": "build", "stage_name": "Build", "status": "succeeded", "started_at": START, "ended_at": START},
        {"stage_id": "deploy_prod", "stage_name": "Deploy prod", "status": "running", "started_at": START},
    ]
    req = req.model_copy(
        update={
            "message": "Ship <+pipeline.variables.tag> to prod?\nChange CHG-7",
            # Whoever writes the pipeline writes this: an escape sequence and a CR must not rewrite the screen.
            "pipeline_name": "Payments\x1b[2K\rFAKE \u202eevil",
            "include_pipeline_execution_history": True,
            "execution_history": [HistoryEntry.model_validate(entry) for entry in history],
        }
    )
    gate_id, token = await front_door.open_gate(req)

    text = await front_door.cli("bob", "pending", "--mine")
    assert text.exit_code == 0 and gate_id in text.stdout
    other_group = json.loads((await front_door.cli("bob", "pending", "--group", "docs", "--json")).stdout)
    assert gate_id not in [g["gate_id"] for g in other_group]

    approve = await front_door.cli("bob", "approve", gate_id, "--comment", "fine by me")
    assert approve.exit_code == 0, approve.output
    shown = await front_door.cli("carol", "show", gate_id)
    assert shown.exit_code == 0, shown.output
    assert token in shown.stdout and "pending" in shown.stdout
    assert "progress  1 of 2 approvers (group sre)" in shown.stdout
    assert "vote      bob Approved via api" in shown.stdout and "you       may decide" in shown.stdout
    lines = shown.stdout.splitlines()
    assert "\x1b" not in shown.stdout and "\r" not in shown.stdout and "\u202e" not in shown.stdout
    assert any(line.startswith("pipeline  Payments\\x1b[2K\\rFAKE \\u202eevil (") for line in lines), lines
    message = lines.index("message")
    assert lines[message + 1 : message + 3] == [
        "  Ship (unresolved: <+pipeline.variables.tag>) to prod?",
        "  Change CHG-7",
    ]
    at = format_utc(START)
    assert f"history   Build: succeeded ({at} -> {at})" in lines
    assert f"history   Deploy prod: running ({at})" in lines

    carol = await front_door.cli("carol", "approve", gate_id)
    assert carol.exit_code == 0 and "2 of 2 approvers" in carol.stdout and "gate is now approved" in carol.stdout
    audit = await front_door.cli("bob", "audit", gate_id)
    assert audit.exit_code == 0
    lines = audit.stdout.splitlines()
    assert lines[0] == f"audit of gate {gate_id}"
    assert any("bob approved via api: 'fine by me'" in line for line in lines)
    assert any("carol approved via api" in line for line in lines)
    assert lines[-1].endswith("gate approved")


async def test_invalid_input_and_missing_credentials_give_one_line_errors(
    front_door: FrontDoor, tmp_path: Path
) -> None:
    gate_id, _ = await front_door.open_gate(request(pipeline=pipeline_name(), timeout="1d"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        ("bob", ("approve", gate_id, "--input", "novalue"), 2, "--input expects NAME=VALUE"),
        ("bob", ("put-approval-result", "--cli-input-json", f"file://{tmp_path}/missing.json"), 1, "cannot read"),
        ("bob", ("put-approval-result", "--cli-input-json", f"file://{bad}"), 1, "is not valid JSON"),
        ("bob", ("show", "no_such_gate"), 1, "no gate no_such_gate"),
        ("bob", ("audit", "no_such_gate"), 1, "no gate no_such_gate"),
        (None, ("approve", gate_id), 1, "no token: set SIGNOFF_TOKEN"),
    ]
    for user, args, code, message in cases:
        result = await front_door.cli(user, *args)
        assert result.exit_code == code, (args, result.output)
        assert message in _one_line_error(result), (args, result.stderr)
    forged = await front_door.cli(None, "approve", gate_id, SIGNOFF_TOKEN="sgf_" + "y" * 43)
    assert forged.exit_code == 1 and "not signed in (invalid_token)" in _one_line_error(forged)


async def test_no_reachable_api_says_where_it_looked_and_how_to_start_one(front_door: FrontDoor) -> None:
    result = await front_door.cli("bob", "pending", SIGNOFF_API_URL="http://127.0.0.1:9")
    assert result.exit_code == 1
    error = _one_line_error(result)
    assert "no signoff API is reachable at http://127.0.0.1:9" in error and "./signoffw dev up" in error
    unset = await front_door.cli("bob", "pending", SIGNOFF_API_URL=None)
    assert unset.exit_code == 1 and "no signoff API configured" in _one_line_error(unset)


async def test_login_stores_the_url_and_token_owner_only_and_later_commands_use_them(
    front_door: FrontDoor, tmp_path: Path
) -> None:
    token = await front_door.token("dana")
    login = await front_door.cli(
        None, "login", "--url", front_door.url, SIGNOFF_API_URL=None, SIGNOFF_LOGIN_TOKEN=token
    )
    assert login.exit_code == 0, login.output
    assert f"signed in to {front_door.url} as dana" in login.stdout
    saved = tmp_path / "config" / "signoff" / "credentials.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    listed = await front_door.cli(None, "pending", "--json", SIGNOFF_API_URL=None)
    assert listed.exit_code == 0, listed.output
    refused = await front_door.cli(None, "login", "--url", front_door.url, SIGNOFF_LOGIN_TOKEN="sgf_" + "z" * 43)
    assert refused.exit_code == 1 and "not signed in" in _one_line_error(refused)


async def test_ids_reach_the_api_as_one_segment_whatever_they_hold(front_door: FrontDoor) -> None:
    # Percent-encoded: `?x=1` is not a query, `..` does not climb to /api/v1, `#` is not a fragment.
    for gate_id in ("?x=1", "..", ".", "a#b", "100%", "ä"):
        for command in ("show", "audit", "approve"):
            result = await front_door.cli("bob", command, gate_id)
            assert result.exit_code == 1, (command, gate_id, result.output)
            assert _one_line_error(result) == f"error: failed (unknown_gate): no gate {gate_id}", (command, gate_id)
    state = await front_door.cli("bob", "get-pipeline-state", "--name", "?x=1")
    assert _one_line_error(state) == "error: failed (unknown_pipeline): no execution of pipeline '?x=1'"
    # No id is empty or holds a `/`: a usage error, nothing is asked (`../me` would have been GET /api/v1/me).
    for args, what in [
        (("show", "../me"), "GATE_ID '../me' is not an id"),
        (("show", ""), "GATE_ID must not be empty"),
        (("logs", ""), "EXECUTION must not be empty"),
        (("get-pipeline-state", "--name", "a/b"), "--name 'a/b' is not an id"),
    ]:
        result = await front_door.cli("bob", *args)
        assert result.exit_code == 2, (args, result.output)
        assert _one_line_error(result).startswith(f"error: {what}"), args


async def test_a_token_that_cannot_be_a_header_is_refused_although_the_api_is_up(front_door: FrontDoor) -> None:
    for token in ("sgf_ä", "sgf_a\nb"):
        result = await front_door.cli(None, "pending", SIGNOFF_TOKEN=token)
        assert result.exit_code == 1, result.output
        error = _one_line_error(result)
        assert error.startswith("error: the token is not a valid token: a token is printable ASCII"), error
