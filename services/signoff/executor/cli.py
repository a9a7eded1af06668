"""The pipeline user's commands, as clients of `signoff api`: run a pipeline, list executions, read their logs,
abort one, show a pipeline's state (CodePipeline's `get-pipeline-state`).

`run` checks the file here first (a bad pipeline is a one-line error before anything is sent), then asks the api
to start it: the api validates it again and publishes the `ExecutionRequested`, with the token's user as its
triggerer. Only that user (or an admin) may abort it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from signoff.cli.client import ApiClient, problem_text, segment
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.terminal import echo

POLL_INTERVAL_SECONDS = 0.5
FINISHED = ("SUCCEEDED", "FAILED", "ABORTED", "REFUSED")


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliUsageError(f"--var {item!r}: expected NAME=VALUE")
        parsed[name.strip()] = value
    return parsed


def _check_locally(file: Path, catalog_path: Path | None, variables: dict[str, str]) -> str:
    # Imported here: the pipeline model and the catalog are for `run` only; the polling commands (`executions`,
    # `get-pipeline-state`) start without them.
    from signoff.catalog import Catalog, CatalogError
    from signoff.catalog.yamldoc import YamlDocumentError
    from signoff.executor.validation import StartRefused, check_start

    try:
        text = file.read_text(encoding="utf-8")  # YAML files are UTF-8 here, whatever the locale says
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{file} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    catalog = None
    if catalog_path is not None:
        try:
            catalog = Catalog.load(catalog_path)
        except (CatalogError, YamlDocumentError, OSError) as exc:
            raise CliError(f"invalid catalog {catalog_path}: {' '.join(str(exc).split())}") from None
    try:
        check_start(text, catalog=catalog, variables=variables, user="you", source=str(file))
    except StartRefused as exc:
        raise CliError(f"{file}: {exc}") from None
    return text


def _wait_for_end(client: ApiClient, execution_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, row = client.call("GET", f"/executions/{segment(execution_id, 'EXECUTION')}", ok=(200, 404))
        if status == 200 and row["status"] in FINISHED:
            return row
        if time.monotonic() > deadline:
            state = row["status"] if status == 200 else "not started"
            raise CliError(f"execution {execution_id} did not finish within {timeout:g}s (it is {state})")
        time.sleep(POLL_INTERVAL_SECONDS)  # the CLI polls the api's record of the execution; no event reaches it


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A pipeline variable (repeatable).")
@click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SIGNOFF_CATALOG_FILE",
    help="Check service / environment / infrastructure refs against this catalog first (default: "
    "$SIGNOFF_CATALOG_FILE; the api checks them against its own catalog anyway).",
)
@click.option("--wait", is_flag=True, help="Wait until the execution ends; exit 1 unless it succeeded.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="With --wait: give up after SECONDS.")
def run(file: Path, variables: tuple[str, ...], catalog_path: Path | None, wait: bool, timeout: float) -> None:
    """Run the pipeline in FILE (Harness YAML) as yourself; prints the execution id."""
    values = _parse_vars(variables)
    text = _check_locally(file, catalog_path, values)
    client = ApiClient.configured()
    status, started = client.call(
        "POST", "/executions", json_body={"pipeline_yaml": text, "variables": values}, ok=(201, 422)
    )
    if status == 422:  # what only the api can check (its catalog, the directory): said as the local check says it
        if started.get("code") != "invalid_pipeline":
            raise CliError(problem_text(status, started))
        raise CliError(f"{file}: {started['detail']}")
    execution_id = started["execution_id"]
    echo(execution_id)  # at once: with --wait the user can follow it (logs, get-pipeline-state) meanwhile
    if not wait:
        return
    row = _wait_for_end(client, execution_id, timeout)
    if row["status"] == "REFUSED":
        raise CliError(f"the executor refused execution {execution_id}: {row['refused']}")
    if row["status"] != "SUCCEEDED":
        raise CliError(f"execution {execution_id} {row['status'].lower()}: {row['reason']}")
    echo(f"execution {execution_id} succeeded")


@click.command("executions")
@click.option("--pipeline", help="Only executions of this pipeline identifier.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def executions(pipeline: str | None, limit: int, as_json: bool) -> None:
    """List executions, newest first."""
    _, rows = ApiClient.configured().call("GET", "/executions", params={"pipeline": pipeline, "limit": limit})
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no executions")
        return
    for row in rows:
        current = ", ".join(row["current"]) or (row["reason"] or "")
        echo(
            f"{row['execution_id']}  {row['pipeline']} #{row['sequence']}  {row['status']:<9}  "
            f"{row['started_at']}  {current}".rstrip()
        )


@click.command("abort")
@click.argument("execution_id", metavar="EXECUTION")
@click.option("--reason", default="", help="Why (shown to the approvers of its cancelled gate).")
def abort(execution_id: str, reason: str) -> None:
    """Abort a running execution you started (admins: any): its scripts stop, its waiting gate is cancelled."""
    path = f"/executions/{segment(execution_id, 'EXECUTION')}/abort"
    status, row = ApiClient.configured().call("POST", path, json_body={"reason": reason})
    if status == 202:
        raise CliError(f"abort of execution {execution_id} requested; it is still {row['status'].lower()}")
    echo(f"execution {execution_id} {row['status'].lower()}" + (f": {row['reason']}" if row["reason"] else ""))


@click.command("logs")
@click.argument("execution_id", metavar="EXECUTION")
def logs(execution_id: str) -> None:
    """The output of each script an execution ran (its last 64 KiB), in the order they ended."""
    path = f"/executions/{segment(execution_id, 'EXECUTION')}/logs"
    _, answer = ApiClient.configured().call("GET", path)
    for row in answer["logs"]:
        code = "timed out" if row["exit_code"] is None else f"exit {row['exit_code']}"
        echo(f"== {row['step_path']} (attempt {row['attempt']}, {code})")
        echo(row["output"], nl=not row["output"].endswith("\n"))
    for failure in answer["failures"]:  # a refused or unanswered approval ran no script: say why here too
        echo(f"== {failure['step_path']} (attempt {failure['attempt']}, {failure['status']})")
        echo(failure["reason"])


@click.command("get-pipeline-state")
@click.option("--name", "name", required=True, help="The pipeline identifier.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (CodePipeline's shape).")
def get_pipeline_state(name: str, as_json: bool) -> None:
    """The state of a pipeline's latest execution, with the token of a waiting approval (like CodePipeline's)."""
    path = f"/pipelines/{segment(name, '--name')}/state"
    _, state = ApiClient.configured().call("GET", path)
    if as_json:
        echo(json.dumps(state, indent=2))
        return
    echo(f"pipeline {state['pipelineName']}  execution {state['pipelineExecutionId']}  {state['status']}")
    for stage in state["stageStates"]:
        stage_status = stage.get("latestExecution", {}).get("status", "-")
        echo(f"stage {stage['stageName']}  {stage_status}")
        for action in stage["actionStates"]:
            latest = action.get("latestExecution", {})
            line = f"  {action['actionName']:<28} {latest.get('status', '-')}"
            if "token" in latest:
                line += f"  token {latest['token']}"
            if latest.get("summary"):
                line += f"  {latest['summary']}"
            echo(line)


COMMANDS = (run, executions, logs, abort, get_pipeline_state)
