"""The pipeline user's commands: run a pipeline, list executions, abort one, show a pipeline's state.

`run` validates the pipeline (and its variables) here first, so a bad file is a one-line error before anything is
sent, then publishes an `ExecutionRequested` carrying the definition; the executor role validates it again against
its own catalog and starts it. Reads go to the executor schema through `ExecutorRepository`; aborts are published
as `ExecutionAbortRequested` events, like any other system would. Commands find a running dev stack the way the
approver's commands do (SIGNOFF_* variables, else `.signoff/dev/env`).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.catalog import Catalog, CatalogError
from signoff.catalog.yamldoc import YamlDocumentError
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import cli_settings, connection, publish
from signoff.cli.settings import CliSettings
from signoff.executor.domain.actions import TriggeredBy
from signoff.executor.domain.execution import Execution, ExecutionStatus, InvalidStart, StepStatus
from signoff.executor.domain.pipeline import PipelineError, parse_pipeline
from signoff.executor.handlers import pipeline_problem
from signoff.executor.repository import SCHEMA, ExecutorRepository
from signoff.executor.service import REQUESTS_TOPIC

EVENT_SOURCE = "urn:signoff:cli"
POLL_INTERVAL_SECONDS = 0.2
ABORT_WAIT_SECONDS = 30.0

T = TypeVar("T")

# CodePipeline's words for our statuses (get-pipeline-state).
ACTION_STATUS = {
    StepStatus.RUNNING: "InProgress",
    StepStatus.WAITING_APPROVAL: "InProgress",
    StepStatus.SUCCEEDED: "Succeeded",
    StepStatus.FAILED: "Failed",
    StepStatus.APPROVAL_REJECTED: "Failed",
    StepStatus.EXPIRED: "Failed",
    StepStatus.ABORTED: "Abandoned",
}
STAGE_STATUS = {**ACTION_STATUS, StepStatus.ABORTED: "Stopped", StepStatus.SKIPPED: "Cancelled"}


# ---------------------------------------------------------------------------------------------------- plumbing


def _settings() -> CliSettings:
    return cli_settings(CliSettings)


async def _with_db(settings: CliSettings, work: Callable[[asyncpg.Connection, ExecutorRepository], Awaitable[T]]) -> T:
    async with connection(settings) as conn:
        return await work(conn, ExecutorRepository(SCHEMA))


def _run_db(settings: CliSettings, work: Callable[[asyncpg.Connection, ExecutorRepository], Awaitable[T]]) -> T:
    return asyncio.run(_with_db(settings, work))


async def _publish(settings: CliSettings, data: wire.EventData) -> None:
    await publish(settings, REQUESTS_TOPIC, data, source=EVENT_SOURCE, what="the request")


def _epoch(value: datetime | None) -> float | None:
    return round(value.timestamp(), 3) if value is not None else None


def _user(as_user: str | None, settings: CliSettings) -> str:
    return as_user or settings.user or getpass.getuser()


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliUsageError(f"--var {item!r}: expected NAME=VALUE")
        parsed[name.strip()] = value
    return parsed


# ---------------------------------------------------------------------------------------------------- run


def _check_pipeline(file: Path, catalog_path: Path | None, variables: dict[str, str], user: str) -> tuple[str, Any]:
    try:
        text = file.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    catalog = None
    if catalog_path is not None:
        try:
            catalog = Catalog.load(catalog_path)
        except (CatalogError, YamlDocumentError, OSError) as exc:
            raise CliError(f"invalid catalog {catalog_path}: {' '.join(str(exc).split())}") from None
    try:
        pipeline = parse_pipeline(text, catalog=catalog, source=str(file))
    except PipelineError as exc:
        raise CliError(f"{file}: invalid pipeline: {pipeline_problem(exc)}") from None
    try:
        Execution.start(
            pipeline,
            execution_id="check",
            sequence_id=0,
            triggered_by=TriggeredBy(name=user),
            now=datetime.now(UTC),
            variables=variables,
            catalog=catalog,
        )
    except InvalidStart as exc:
        raise CliError(f"{file}: {'; '.join(exc.problems)}") from None
    return text, pipeline


async def _wait_for_end(settings: CliSettings, execution_id: str, timeout: float) -> tuple[str, str | None]:
    """(status, reason) once the execution finished or was refused; CliError after `timeout` seconds."""
    deadline = time.monotonic() + timeout

    async def work(conn: asyncpg.Connection, repo: ExecutorRepository) -> tuple[str, str | None]:
        while True:
            refusal = await repo.refusal(conn, execution_id)
            if refusal is not None:
                return "REFUSED", f"{refusal['reason']}: {refusal['error']}"
            row = await repo.find_execution(conn, execution_id)
            if row is not None and row["status"] != ExecutionStatus.RUNNING:
                return row["status"], row["reason"]
            if time.monotonic() > deadline:
                state = row["status"] if row is not None else "not started"
                raise CliError(f"execution {execution_id} did not finish within {timeout:g}s (it is {state})")
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

    return await _with_db(settings, work)


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A pipeline variable (repeatable).")
@click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SIGNOFF_CATALOG_FILE",
    help="Check service / environment / infrastructure refs against this catalog first (default: "
    "$SIGNOFF_CATALOG_FILE).",
)
@click.option("--wait", is_flag=True, help="Wait until the execution ends; exit 1 unless it succeeded.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="With --wait: give up after SECONDS.")
@click.option("--as", "as_user", help="Who runs it (default $SIGNOFF_USER, else your login).")
def run(
    file: Path, variables: tuple[str, ...], catalog_path: Path | None, wait: bool, timeout: float, as_user: str | None
) -> None:
    """Run the pipeline in FILE (Harness YAML); prints the execution id."""
    values = _parse_vars(variables)
    settings = _settings()
    user = _user(as_user, settings)
    text, pipeline = _check_pipeline(file, catalog_path, values, user)
    execution_id = uuid.uuid4().hex
    try:
        request = wire.ExecutionRequested(
            execution_id=execution_id,
            pipeline_id=pipeline.identifier,
            variables=values,
            triggered_by=wire.Person(user=user),
            requested_at=datetime.now(UTC),
            pipeline_yaml=text,
        )
    except ValidationError as exc:  # e.g. a file or a value larger than the contract allows, a user id with spaces
        first = exc.errors()[0]
        raise CliError(f"cannot request the execution: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    async def main() -> tuple[str, str | None] | None:
        await _publish(settings, request)
        click.echo(execution_id)  # at once: with --wait the user can follow it (logs, get-pipeline-state) meanwhile
        return await _wait_for_end(settings, execution_id, timeout) if wait else None

    outcome = asyncio.run(main())
    if outcome is not None:
        status, reason = outcome
        if status == "REFUSED":
            raise CliError(f"the executor refused execution {execution_id}: {reason}")
        if status != ExecutionStatus.SUCCEEDED:
            raise CliError(f"execution {execution_id} {status.lower()}: {reason}")
        click.echo(f"execution {execution_id} succeeded")


# ---------------------------------------------------------------------------------------------------- reads


def _summary(row: Mapping[str, Any]) -> dict[str, Any]:
    state = row["state"]
    current = [
        f"{step['path']} ({step['status']})"
        for step in state["steps"]
        if step["status"] in (StepStatus.RUNNING, StepStatus.WAITING_APPROVAL)
    ]
    return {
        "execution_id": row["id"],
        "pipeline": row["pipeline_id"],
        "pipeline_name": row["pipeline_name"],
        "sequence": row["sequence_id"],
        "status": row["status"],
        "reason": row["reason"],
        "triggered_by": (row["triggered_by"] or {}).get("user"),
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "current": current,
    }


@click.command("executions")
@click.option("--pipeline", help="Only executions of this pipeline identifier.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def executions(pipeline: str | None, limit: int, as_json: bool) -> None:
    """List executions, newest first."""

    async def work(conn: asyncpg.Connection, repo: ExecutorRepository) -> list[dict[str, Any]]:
        return [_summary(row) for row in await repo.list_executions(conn, pipeline, limit)]

    rows = _run_db(_settings(), work)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no executions")
        return
    for row in rows:
        current = ", ".join(row["current"]) or (row["reason"] or "")
        click.echo(
            f"{row['execution_id']}  {row['pipeline']} #{row['sequence']}  {row['status']:<9}  "
            f"{row['started_at']}  {current}".rstrip()
        )


@click.command("abort")
@click.argument("execution_id", metavar="EXECUTION")
@click.option("--reason", default="", help="Why (shown to the approvers of its cancelled gate).")
@click.option("--as", "as_user", help="Who aborts it (default $SIGNOFF_USER, else your login).")
def abort(execution_id: str, reason: str, as_user: str | None) -> None:
    """Abort a running execution: its scripts stop, its waiting approval gate is cancelled."""
    settings = _settings()

    async def find(conn: asyncpg.Connection, repo: ExecutorRepository) -> asyncpg.Record | None:
        return await repo.find_execution(conn, execution_id)

    async def main() -> tuple[str, str | None]:
        row = await _with_db(settings, find)
        if row is None:
            raise CliError(f"no execution {execution_id}")
        if row["status"] != ExecutionStatus.RUNNING:
            raise CliError(f"execution {execution_id} already ended ({row['status'].lower()})")
        try:
            request = wire.ExecutionAbortRequested(
                execution_id=execution_id,
                requested_by=wire.Person(user=_user(as_user, settings)),
                reason=reason,
                requested_at=datetime.now(UTC),
            )
        except ValidationError as exc:
            raise CliUsageError(exc.errors()[0]["msg"]) from None
        await _publish(settings, request)
        return await _wait_for_end(settings, execution_id, ABORT_WAIT_SECONDS)

    status, why = asyncio.run(main())
    click.echo(f"execution {execution_id} {status.lower()}" + (f": {why}" if why else ""))


@click.command("logs")
@click.argument("execution_id", metavar="EXECUTION")
def logs(execution_id: str) -> None:
    """The output of each script an execution ran (its last 64 KiB), in the order they ended."""

    async def work(conn: asyncpg.Connection, repo: ExecutorRepository) -> tuple[Any, list[asyncpg.Record]] | None:
        execution = await repo.find_execution(conn, execution_id)
        if execution is None:
            return None
        return execution, list(await repo.logs_of(conn, execution_id))

    found = _run_db(_settings(), work)
    if found is None:
        raise CliError(f"no execution {execution_id}")
    execution, rows = found
    for row in rows:
        code = "timed out" if row["exit_code"] is None else f"exit {row['exit_code']}"
        click.echo(f"== {row['step_path']} (attempt {row['attempt']}, {code})")
        click.echo(row["output"], nl=not row["output"].endswith("\n"))
    # A step that ran no script but failed (a refused or unanswered approval) says why here too.
    logged = {(row["step_path"], row["attempt"]) for row in rows}
    for step in execution["state"]["steps"]:
        if step["status"] in ("FAILED", "EXPIRED") and (step["path"], step["attempt"]) not in logged:
            click.echo(f"== {step['path']} (attempt {step['attempt']}, {step['status']})")
            click.echo(step.get("reason") or "")


def pipeline_state(row: Mapping[str, Any], gates: list[Mapping[str, Any]]) -> dict[str, Any]:
    """CodePipeline's `get-pipeline-state` document for the latest execution of a pipeline: pipeline, stage and
    action names are our identifiers (as `put-approval-result` takes them); a waiting approval shows its token."""
    execution = Execution.from_dict(row["state"])
    gate_of = {(g["step_path"], g["attempt"]): g for g in gates}
    stages = []
    for planned in execution.plan.stages():
        stage_status = execution.stage_status(planned.identifier)
        stage: dict[str, Any] = {"stageName": planned.identifier, "actionStates": []}
        if stage_status in STAGE_STATUS:
            stage["latestExecution"] = {
                "pipelineExecutionId": execution.execution_id,
                "status": STAGE_STATUS[stage_status],
            }
        for step_plan in planned.steps():
            step = execution.step(step_plan.path)
            action: dict[str, Any] = {"actionName": step.identifier}
            if step.status in ACTION_STATUS:
                latest: dict[str, Any] = {
                    "status": ACTION_STATUS[step.status],
                    "lastStatusChange": _epoch(step.finished_at or step.started_at),
                }
                gate = gate_of.get((step.path, step.attempt))
                if step.status == StepStatus.WAITING_APPROVAL and gate is not None:
                    latest["token"] = gate["token"]
                    latest["summary"] = gate["message"]
                    latest["externalExecutionId"] = gate["gate_id"]
                elif step.approval is not None:
                    activities = step.approval.activities
                    latest["summary"] = "; ".join(a.comments for a in activities if a.comments) or step.approval.action
                    if activities:
                        latest["lastUpdatedBy"] = activities[-1].approver.name
                elif step.reason:
                    latest["summary"] = step.reason
                action["latestExecution"] = latest
            stage["actionStates"].append(action)
        stages.append(stage)
    return {
        "pipelineName": row["pipeline_id"],
        "pipelineVersion": 1,
        "created": _epoch(row["started_at"]),
        "updated": _epoch(row["updated_at"]),
        "pipelineExecutionId": execution.execution_id,
        "status": row["status"],
        "stageStates": stages,
    }


@click.command("get-pipeline-state")
@click.option("--name", "name", required=True, help="The pipeline identifier.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (CodePipeline's shape).")
def get_pipeline_state(name: str, as_json: bool) -> None:
    """The state of a pipeline's latest execution, with the token of a waiting approval (like CodePipeline's)."""

    async def work(conn: asyncpg.Connection, repo: ExecutorRepository) -> dict[str, Any] | None:
        row = await repo.latest_execution(conn, name)
        if row is None:
            return None
        return pipeline_state(row, list(await repo.gates_of(conn, row["id"])))

    state = _run_db(_settings(), work)
    if state is None:
        raise CliError(f"no execution of pipeline {name!r}")
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    click.echo(f"pipeline {state['pipelineName']}  execution {state['pipelineExecutionId']}  {state['status']}")
    for stage in state["stageStates"]:
        stage_status = stage.get("latestExecution", {}).get("status", "-")
        click.echo(f"stage {stage['stageName']}  {stage_status}")
        for action in stage["actionStates"]:
            latest = action.get("latestExecution", {})
            line = f"  {action['actionName']:<28} {latest.get('status', '-')}"
            if "token" in latest:
                line += f"  token {latest['token']}"
            if latest.get("summary"):
                line += f"  {latest['summary']}"
            click.echo(line)


COMMANDS = (run, executions, logs, abort, get_pipeline_state)
