"""The approver's commands, as clients of `signoff api`: list and inspect gates, vote on them as yourself, read
their audit trail. And `groups`, the directory's admin command (server-side: it writes the approval schema).

Votes are never written here: the api turns them into signed decisions of the user the token belongs to and
answers with the approval service's verdict (counted, or refused with its reason).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import click

from signoff.approval.directory import read_directory
from signoff.approval.repository import SCHEMA, ApprovalRepository
from signoff.cli.client import ApiClient, echo_answer, save_credentials, segment
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import cli_settings, echo_json, run_with_connection
from signoff.cli.terminal import echo
from signoff.notifier.domain.view import mark_expressions
from signoff.runtime.settings import Settings


def _client() -> ApiClient:
    return ApiClient.configured()


def _run_db(work):
    return run_with_connection(cli_settings(Settings), lambda conn: work(conn, ApprovalRepository(SCHEMA)))


# ---------------------------------------------------------------------------------------------------- login


@click.command("login")
@click.option("--url", required=True, help="The signoff API, e.g. https://signoff.example.com.")
@click.option(
    "--token",
    "token",
    envvar="SIGNOFF_LOGIN_TOKEN",
    help="Your API token (default: asked for, without echo).",
)
def login(url: str, token: str | None) -> None:
    """Remember the API's URL and your token (in your config folder, mode 0600) after checking them."""
    if not url.startswith(("http://", "https://")):
        raise CliUsageError("--url must start with http:// or https://")
    token = token or click.prompt("token", hide_input=True)
    _, me = ApiClient(url, token).call("GET", "/me")
    path = save_credentials(url, token.strip())  # as it was sent
    echo(f"signed in to {url} as {me['user']} (saved in {path})")


# ---------------------------------------------------------------------------------------------------- reads


@click.command("pending")
@click.option("--group", "-g", help="Only gates whose approvers include this user group.")
@click.option("--mine", is_flag=True, help="Only the gates you may decide now.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pending(group: str | None, mine: bool, limit: int, as_json: bool) -> None:
    """List pending approval gates, newest first."""
    _, listed = _client().call(
        "GET", "/gates", params={"status": "pending", "group": group, "mine": "true" if mine else None, "limit": limit}
    )
    gates = listed["gates"]
    if as_json:
        echo_json(gates)
        return
    if not gates:
        echo("no pending gates")
        return
    for g in gates:
        echo(
            f"{g['gate_id']}  {g['pipeline_id']}/{g['stage_id']}/{g['step_id']}  execution {g['execution_id']}  "
            f"groups {','.join(g['groups']) or '-'}  {g['time_left']}"
        )


@click.command("show")
@click.argument("gate_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(gate_id: str, as_json: bool) -> None:
    """Show one gate: the approval message, status, who may approve and how far, inputs, votes, its token."""
    path = f"/gates/{segment(gate_id, 'GATE_ID')}"
    _, gate = _client().call("GET", path)
    if as_json:
        echo_json(gate)
        return
    you = gate["you"]
    echo(f"gate      {gate['gate_id']}   {gate['links']['page']}")
    echo(f"pipeline  {gate['pipeline_name']} ({gate['pipeline_id']}, execution {gate['execution_id']})")
    echo(f"stage     {gate['stage_name']}   step {gate['step_name']}   triggered by {gate['triggered_by']}")
    expiry = f"expires {gate['expires_at']}, then {gate['timeout_action']}"
    echo(f"status    {gate['status']}   {gate['time_left']} ({expiry})")
    echo(f"token     {gate['token']}")
    echo("message")
    # An expression the executor could not resolve yet is marked as the notifications and the page mark it.
    for line in (mark_expressions(gate["message"]) or "(none)").splitlines() or [""]:
        echo(f"  {line}")
    for entry in gate["history"]:  # includePipelineExecutionHistory: what ran before the gate opened
        what = entry["stage_name"] + (f" / {entry['step_name']}" if entry["step_name"] else "")
        ended = f" -> {entry['ended_at']}" if entry["ended_at"] else ""
        echo(f"history   {what}: {entry['status']} ({entry['started_at'] or 'not started'}{ended})")
    echo(f"progress  {gate['policy']['text']}")
    if gate["policy"]["disallow_pipeline_executor"]:
        echo(f"          {gate['triggered_by']} (who triggered it) may not approve")
    for item in gate["inputs"]:
        extras = [f"default {item['defaultValue']!r}" if item["defaultValue"] else "no default"]
        if item["required"]:
            extras.append("required")
        if item["allowedValues"]:
            extras.append("one of " + ", ".join(item["allowedValues"]))
        echo(f"input     {item['name']}: {'; '.join(extras)}")
    for v in gate["votes"]:
        comment = f"  {v['comment']!r}" if v["comment"] else ""
        echo(f"vote      {v['approver']} {v['status']} via {v['source']} at {v['decided_at']}{comment}")
    if you["may_decide"]:
        echo("you       may decide" + (f" (your vote: {you['current_vote']})" if you["current_vote"] else ""))
    else:
        echo(f"you       may not decide ({you['reason']})")


@click.command("audit")
@click.argument("gate_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(gate_id: str, as_json: bool) -> None:
    """Show the audit trail of one gate: request, each decision (by whom, via what), refusals, outcome."""
    path = f"/gates/{segment(gate_id, 'GATE_ID')}/audit"
    _, trail = _client().call("GET", path)
    if as_json:
        echo_json(trail)
        return
    echo(f"audit of gate {gate_id}")
    for entry in trail["entries"]:
        echo(f"  {entry['at']}  {entry['text']}")


# ---------------------------------------------------------------------------------------------------- decisions


def _parse_inputs(values: tuple[str, ...]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliUsageError(f"--input expects NAME=VALUE, got {item!r}")
        inputs[name.strip()] = value
    return inputs


def _vote(gate_id: str, status: str, comment: str, inputs: dict[str, str], token: str | None) -> None:
    body = {"status": status, "comment": comment, "inputs": inputs, "token": token}
    path = f"/gates/{segment(gate_id, 'GATE_ID')}/decisions"
    code, answer = _client().call("POST", path, json_body=body)
    echo_answer(answer, code)


@click.command("approve")
@click.argument("gate_id")
@click.option("--comment", default="", help="Why you approve.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE", help="An approver input value (repeatable).")
@click.option("--token", help="Pin the vote to this token (refused as stale if the gate moved on).")
def approve(gate_id: str, comment: str, inputs: tuple[str, ...], token: str | None) -> None:
    """Approve gate GATE_ID as yourself; prints the approval service's answer."""
    _vote(gate_id, "Approved", comment, _parse_inputs(inputs), token)


@click.command("reject")
@click.argument("gate_id")
@click.option("--comment", default="", help="Why you reject.")
@click.option("--token", help="Pin the vote to this token.")
def reject(gate_id: str, comment: str, token: str | None) -> None:
    """Reject gate GATE_ID as yourself."""
    _vote(gate_id, "Rejected", comment, {}, token)


def read_input_json(spec: str) -> dict[str, Any]:
    """`--cli-input-json file://PATH`: the JSON object in PATH (relative to the current folder)."""
    if not spec.startswith("file://"):
        raise CliUsageError("--cli-input-json expects file://PATH")
    path = Path(spec.removeprefix("file://")).expanduser()
    try:
        text = path.read_text(encoding="utf-8")  # JSON is UTF-8 (RFC 8259), whatever the locale says
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); JSON must be UTF-8") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path}: expected a JSON object")
    return doc


@click.command("put-approval-result")
@click.option("--cli-input-json", "input_json", metavar="file://PATH", help="CodePipeline's input JSON file.")
@click.option("--pipeline-name")
@click.option("--stage-name")
@click.option("--action-name")
@click.option("--token")
@click.option("--status", type=click.Choice(["Approved", "Rejected"]), help="Capitalised, as CodePipeline wants.")
@click.option("--summary", help="Your comment.")
def put_approval_result(
    input_json: str | None,
    pipeline_name: str | None,
    stage_name: str | None,
    action_name: str | None,
    token: str | None,
    status: str | None,
    summary: str | None,
) -> None:
    """Approve or reject CodePipeline-style, as yourself: the `put-approval-result` JSON unchanged, or the same
    fields as flags (flags override the file)."""
    doc = read_input_json(input_json) if input_json else {}
    for name, value in (
        ("pipelineName", pipeline_name),
        ("stageName", stage_name),
        ("actionName", action_name),
        ("token", token),
    ):
        if value is not None:
            doc[name] = value
    if status is not None or summary is not None:
        result = dict(doc.get("result") or {})
        if status is not None:
            result["status"] = status
        if summary is not None:
            result["summary"] = summary
        doc["result"] = result
    result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
    missing = [n for n in ("pipelineName", "stageName", "actionName", "token") if not doc.get(n)]
    missing += [f"result.{n}" for n in ("status", "summary") if n not in result]
    if missing:
        raise CliUsageError(f"missing {', '.join(missing)} (in --cli-input-json or as flags)")
    code, answer = _client().call("POST", "/approval-results", json_body=doc)
    echo_answer(answer, code)


# ---------------------------------------------------------------------------------------------------- directory


@click.group("groups")
def groups() -> None:
    """The directory of user groups approval policies name.

    An admin command of the approval service: `load` writes the approval schema's directory table directly,
    through the approval repository (the same write the approval role does at start-up from
    SIGNOFF_DIRECTORY_FILE). Gates resolve members when they open, so open gates keep their members."""


@groups.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def groups_list(as_json: bool) -> None:
    """List user groups with their member counts."""

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> list[dict[str, Any]]:
        return [{"group": r["group_name"], "members": r["members"]} for r in await repo.directory_groups(conn)]

    rows = _run_db(work)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no groups")
    for r in rows:
        echo(f"{r['group']}  {r['members']} member(s)")


@groups.command("show")
@click.argument("group")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def groups_show(group: str, as_json: bool) -> None:
    """Show the members of GROUP."""

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> list[dict[str, Any]]:
        return [
            {"user": r["user_id"], "email": r["email"], **dict(r["chat_handles"] or {})}
            for r in await repo.members_of(conn, [group])
        ]

    members = _run_db(work)
    if not members:
        raise CliError(f"no group {group} (or it has no members)")
    if as_json:
        echo_json({"group": group, "members": members})
        return
    echo(f"group {group}")
    for m in members:
        extra = "  ".join(f"{k}={v}" for k, v in m.items() if k != "user" and v)
        echo(f"  {m['user']}  {extra}".rstrip())


@groups.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace/--merge", default=True, help="Replace the whole directory (default) or merge into it.")
def groups_load(file: Path, replace: bool) -> None:
    """Load user groups from a directory YAML FILE (`groups: {GROUP: [{user, email, slack, teams}]}`)."""
    try:
        members = read_directory(file)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    except Exception as exc:  # YAML and shape errors: one line
        raise CliError(str(exc).splitlines()[0]) from None

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> None:
        async with conn.transaction():
            if replace:
                await repo.replace_directory(conn, members)
            else:
                await repo.upsert_members(conn, members)

    _run_db(work)
    count = len({m[0] for m in members})
    echo(f"loaded {len(members)} member(s) in {count} group(s) from {file}")


COMMANDS = (login, pending, show, approve, reject, audit, put_approval_result, groups)
