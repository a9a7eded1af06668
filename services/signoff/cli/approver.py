"""The approver's commands: list and inspect gates, vote on them, read their audit trail, manage the directory.

Reads go to the approval schema through `ApprovalRepository` (all SQL lives there). Votes are never written here:
they are published as signed `ApprovalDecision` events (source `cli`) to the decisions topic, like any other
decision source; the command then polls the audit trail for the decision id, up to a deadline, and reports
whether the vote counted or why the approval service refused it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.approval.repository import SCHEMA, ApprovalRepository
from signoff.approval.service import DECISIONS_TOPIC, read_directory
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import cli_settings, echo_json, publish, run_with_connection
from signoff.cli.settings import CliSettings
from signoff.contracts.events import DecisionStatus
from signoff.runtime.db import create_pool

SOURCE = "cli"
EVENT_SOURCE = "urn:signoff:cli"
POLL_INTERVAL_SECONDS = 0.2

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------- plumbing


def _settings() -> CliSettings:
    return cli_settings(CliSettings)


def _run_db(settings: CliSettings, work: Callable[[asyncpg.Connection, ApprovalRepository], Awaitable[T]]) -> T:
    return run_with_connection(settings, lambda conn: work(conn, ApprovalRepository(SCHEMA)))


def _gate_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "gate_id": row["id"],
        "pipeline": row["pipeline_id"],
        "execution": row["execution_id"],
        "stage": row["stage_id"],
        "action": row["step_id"],
        "attempt": row["attempt"],
        "status": row["status"],
        "opened_at": row["opened_at"],
        "expires_at": row["expires_at"],
        "groups": sorted((row["members_by_group"] or {}).keys()),
    }


def _gate_detail(row: Mapping[str, Any], votes: list[Mapping[str, Any]]) -> dict[str, Any]:
    request = row["request"] or {}
    return {
        **_gate_summary(row),
        # Shown to whoever can read the gate, as CodePipeline's get-pipeline-state does: decisions are authorised
        # by their signature and the policy, the token only pins them to this gate.
        "token": row["token"],
        "closed_at": row["closed_at"],
        "timeout_action": row["timeout_action"],
        "policy": row["policy"],
        "inputs": row["inputs"],
        "pipeline_executor": row["pipeline_executor"],
        "pipeline_name": request.get("pipeline_name"),
        "stage_name": request.get("stage_name"),
        "step_name": request.get("step_name"),
        "votes": [
            {
                "decision_id": v["decision_id"],
                "approver": v["approver"],
                "status": v["status"],
                "comment": v["comment"],
                "inputs": v["inputs"],
                "source": v["source"],
                "at": v["at"],
            }
            for v in votes
        ],
    }


def _audit_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("seq", "gate_id", "kind", "decision_id", "actor", "reason", "detail", "at")}


# ---------------------------------------------------------------------------------------------------- reads


@click.command("pending")
@click.option("--group", "-g", help="Only gates whose approvers include this user group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pending(group: str | None, as_json: bool) -> None:
    """List pending approval gates."""

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> list[dict[str, Any]]:
        return [_gate_summary(row) for row in await repo.pending_gates(conn, group)]

    gates = _run_db(_settings(), work)
    if as_json:
        echo_json(gates)
        return
    if not gates:
        click.echo("no pending gates")
        return
    for g in gates:
        click.echo(
            f"{g['gate_id']}  {g['pipeline']}/{g['stage']}/{g['action']}  execution {g['execution']}  "
            f"groups {','.join(g['groups']) or '-'}  expires {g['expires_at'].isoformat()}"
        )


@click.command("show")
@click.argument("gate_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(gate_id: str, as_json: bool) -> None:
    """Show one gate: status, policy, votes and its current token."""

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> dict[str, Any] | None:
        row = await repo.find_gate(conn, gate_id)
        if row is None:
            return None
        return _gate_detail(row, [v for v in await repo.votes_of(conn, [gate_id])])

    gate = _run_db(_settings(), work)
    if gate is None:
        raise CliError(f"no gate {gate_id}")
    if as_json:
        echo_json(gate)
        return
    click.echo(f"gate      {gate['gate_id']}")
    click.echo(f"pipeline  {gate['pipeline']} (execution {gate['execution']}, attempt {gate['attempt']})")
    click.echo(f"stage     {gate['stage']}   action {gate['action']}")
    click.echo(f"status    {gate['status']}")
    click.echo(f"token     {gate['token']}")
    click.echo(f"expires   {gate['expires_at'].isoformat()} (then {gate['timeout_action']})")
    click.echo(f"policy    {json.dumps(gate['policy'], sort_keys=True)}")
    if gate["inputs"]:
        click.echo(f"inputs    {json.dumps(gate['inputs'], sort_keys=True)}")
    for v in gate["votes"]:
        comment = f"  {v['comment']!r}" if v["comment"] else ""
        click.echo(f"vote      {v['approver']} {v['status']} via {v['source']} at {v['at'].isoformat()}{comment}")


@click.command("audit")
@click.argument("gate_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(gate_id: str, as_json: bool) -> None:
    """Show the audit trail of one gate: request, votes, refusals, outcome."""

    async def work(conn: asyncpg.Connection, repo: ApprovalRepository) -> list[dict[str, Any]] | None:
        if await repo.find_gate(conn, gate_id) is None:
            return None
        return [_audit_row(r) for r in await repo.audit_of_gate(conn, gate_id)]

    rows = _run_db(_settings(), work)
    if rows is None:
        raise CliError(f"no gate {gate_id}")
    if as_json:
        echo_json({"gate_id": gate_id, "audit": rows})
        return
    click.echo(f"audit of gate {gate_id}")
    for r in rows:
        parts = [r["at"].isoformat(), r["kind"]]
        parts += [f"{name}={r[name]}" for name in ("actor", "decision_id", "reason") if r[name]]
        click.echo("  ".join(parts))


# ---------------------------------------------------------------------------------------------------- decisions


def _parse_inputs(values: tuple[str, ...]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliUsageError(f"--input expects NAME=VALUE, got {item!r}")
        inputs[name.strip()] = value
    return inputs


def _approver(as_user: str | None, settings: CliSettings) -> str:
    user = as_user or settings.user
    if not user:
        raise CliUsageError("who is deciding? pass --as USER or set SIGNOFF_USER")
    return user


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _decide(settings: CliSettings, made: wire.ApprovalDecision) -> None:
    """Sign and publish `made`, wait for the approval service's answer, print it; CliError when refused or
    unanswered."""
    if settings.cli_decision_key is None:
        raise CliError("no decision key: set SIGNOFF_CLI_DECISION_KEY (`signoff dev up` writes it for a dev stack)")
    signed = made.signed(settings.cli_decision_key.get_secret_value().encode())
    answer = asyncio.run(_publish_and_wait(settings, signed))
    if answer is None:
        raise CliError(
            f"no answer for decision {made.decision_id} within {settings.decision_wait_seconds:g}s "
            f"(it may still be processed: signoff audit {made.gate_id or '<gate>'})"
        )
    kind, gate_id, reason, detail, status = answer
    if kind == "refused":
        suffix = f": {detail}" if detail else ""
        raise CliError(f"refused ({reason}){suffix} [decision {made.decision_id}, gate {gate_id or '-'}]")
    verb = "approved" if made.status is DecisionStatus.APPROVED else "rejected"
    click.echo(f"vote counted: {made.approver} {verb} gate {gate_id}; gate is now {status}")


async def _publish_and_wait(
    settings: CliSettings, decision: wire.ApprovalDecision
) -> tuple[str, str | None, str | None, str, str | None] | None:
    await publish(settings, DECISIONS_TOPIC, decision, source=EVENT_SOURCE, what="the decision")
    try:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"decision {decision.decision_id} published, but cannot reach the database: {exc}") from None
    repo = ApprovalRepository(SCHEMA)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.decision_wait_seconds
    try:
        while True:
            async with pool.acquire() as conn:
                rows = await repo.audit_of_decision(conn, decision.decision_id)
                answer = next((r for r in rows if r["kind"] in ("vote", "refused")), None)
                if answer is not None:
                    status = await repo.gate_status(conn, answer["gate_id"]) if answer["gate_id"] else None
                    detail = (answer["detail"] or {}).get("detail", "")
                    return answer["kind"], answer["gate_id"], answer["reason"], detail, status
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(POLL_INTERVAL_SECONDS, remaining))
    finally:
        await pool.close()


def _by_gate_id(gate_id: str, token: str | None, status: DecisionStatus, comment: str, inputs, as_user) -> None:
    if not token:
        raise CliUsageError("missing --token (see `signoff show GATE`)")
    settings = _settings()
    approver = _approver(as_user, settings)
    try:
        made = wire.ApprovalDecision(
            decision_id=str(uuid.uuid4()),
            source=SOURCE,
            gate_id=gate_id,
            token=token,
            status=status,
            approver=approver,
            comment=comment,
            inputs=_parse_inputs(inputs),
            decided_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        raise CliUsageError(_validation_message(exc)) from None
    _decide(settings, made)


_as_option = click.option("--as", "as_user", metavar="USER", help="Approver user id (default: $SIGNOFF_USER).")


@click.command("approve")
@click.argument("gate_id")
@click.option("--token", help="The gate's current token (`signoff show GATE`).")
@click.option("--comment", default="", help="Why you approve.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE", help="An approver input value (repeatable).")
@_as_option
def approve(gate_id: str, token: str | None, comment: str, inputs: tuple[str, ...], as_user: str | None) -> None:
    """Approve gate GATE_ID."""
    _by_gate_id(gate_id, token, DecisionStatus.APPROVED, comment, inputs, as_user)


@click.command("reject")
@click.argument("gate_id")
@click.option("--token", help="The gate's current token (`signoff show GATE`).")
@click.option("--comment", default="", help="Why you reject.")
@_as_option
def reject(gate_id: str, token: str | None, comment: str, as_user: str | None) -> None:
    """Reject gate GATE_ID."""
    _by_gate_id(gate_id, token, DecisionStatus.REJECTED, comment, (), as_user)


def _read_input_json(spec: str) -> dict[str, Any]:
    if not spec.startswith("file://"):
        raise CliUsageError("--cli-input-json expects file://PATH")
    path = Path(spec.removeprefix("file://")).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
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
@_as_option
def put_approval_result(
    input_json: str | None,
    pipeline_name: str | None,
    stage_name: str | None,
    action_name: str | None,
    token: str | None,
    status: str | None,
    summary: str | None,
    as_user: str | None,
) -> None:
    """Approve or reject CodePipeline-style: the `put-approval-result` JSON unchanged, or the same fields as flags
    (flags override the file)."""
    doc = _read_input_json(input_json) if input_json else {}
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
    missing = [n for n in ("pipelineName", "stageName", "actionName", "token") if not doc.get(n)]
    if missing or not (doc.get("result") or {}).get("status"):
        names = ", ".join(missing + ([] if (doc.get("result") or {}).get("status") else ["result.status"]))
        raise CliUsageError(f"missing {names} (in --cli-input-json or as flags)")
    settings = _settings()
    approver = _approver(as_user, settings)
    try:
        made = wire.ApprovalDecision.from_codepipeline(doc, approver=approver, source=SOURCE)
    except ValidationError as exc:
        raise CliUsageError(f"invalid approval result: {_validation_message(exc)}") from None
    _decide(settings, made)


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

    rows = _run_db(_settings(), work)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no groups")
    for r in rows:
        click.echo(f"{r['group']}  {r['members']} member(s)")


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

    members = _run_db(_settings(), work)
    if not members:
        raise CliError(f"no group {group} (or it has no members)")
    if as_json:
        echo_json({"group": group, "members": members})
        return
    click.echo(f"group {group}")
    for m in members:
        extra = "  ".join(f"{k}={v}" for k, v in m.items() if k != "user" and v)
        click.echo(f"  {m['user']}  {extra}".rstrip())


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

    _run_db(_settings(), work)
    count = len({m[0] for m in members})
    click.echo(f"loaded {len(members)} member(s) in {count} group(s) from {file}")


COMMANDS = (pending, show, approve, reject, audit, put_approval_result, groups)
