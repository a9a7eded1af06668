"""The pipeline user's CLI (`run`, `executions`, `logs`, `abort`, `get-pipeline-state`) as a client of the api role,
against the executor role, on the real broker and PostgreSQL. The CLI is invoked in-process with click's CliRunner
(in a worker thread: it runs its own event loop) with only SIGNOFF_API_URL and alice's SIGNOFF_TOKEN: no database
URL, no broker. The api publishes to this test's execution requests topic, which the executor consumes."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import structlog
from click.testing import CliRunner, Result

from signoff import contracts as wire
from signoff.api.identity import issue_token
from signoff.api.repository import ApiRepository
from signoff.api.service import ApiRole
from signoff.api.settings import ApiSettings
from signoff.cli.main import cli
from tests.integration.executor.conftest import CATALOG, EXAMPLE, ExecutorRole, gate_opened
from tests.support.yaml_bombs import alias_bomb
from tests.unit.executor.builders import approval, as_yaml, parallel, pipeline, shell, stage

pytestmark = pytest.mark.integration


class CliRole(ExecutorRole):
    home: Path
    api: ApiRole
    tokens: dict[str, str]

    async def start(self) -> None:
        await super().start()
        self.api = ApiRole(
            ApiSettings(
                **{**self.settings.model_dump(exclude={"catalog_file"}), "api_port": 0, "api_host": "127.0.0.1"}
            ),
            requests_topic=self.requests,
            gates_topic=self.gates,
        )
        await self.api.start()
        self.tokens = {}
        for user in ("alice", "bob"):
            async with self.pool.acquire() as conn:
                _, self.tokens[user] = await issue_token(
                    conn,
                    ApiRepository(),
                    user=user,
                    name="test",
                    permissions=(),
                    lifetime=timedelta(days=1),
                    now=datetime.now(UTC),
                )

    async def stop(self) -> None:
        await self.api.stop()
        await super().stop()

    def env(self, user: str) -> dict[str, str | None]:
        return {
            "SIGNOFF_API_URL": self.api.url,
            "SIGNOFF_TOKEN": self.tokens[user],
            "SIGNOFF_HOME": str(self.home),  # never a developer's running dev stack
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "SIGNOFF_DATABASE_URL": None,
            "SIGNOFF_KAFKA_BOOTSTRAP": None,
            "SIGNOFF_CATALOG_FILE": None,
        }

    async def cli(self, *args: str, user: str = "alice") -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=self.env(user), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _service_logs_to_stderr():
    """The role logs from this process while CliRunner swaps sys.stdout for the command's output: keep its lines
    out of what the command printed."""
    previous = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    yield
    structlog.configure(**previous)


@pytest.fixture
async def role(settings, names, database_url, tmp_path: Path) -> AsyncIterator[CliRole]:
    role = CliRole(settings, names, database_url)
    role.home = tmp_path / "home"
    await role.start()
    try:
        yield role
    finally:
        await role.stop()


def _own_copy(tmp_path: Path, text: str, identifier: str) -> tuple[Path, str]:
    """`text` with its pipeline identifier made unique to this test (the requests topic is shared)."""
    unique = f"{identifier}_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{unique}.yaml"
    path.write_text(text.replace(f"identifier: {identifier}\n", f"identifier: {unique}\n", 1))
    return path, unique


def _one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


async def test_run_refuses_an_invalid_pipeline_in_one_line_before_sending_it(role, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(as_yaml(pipeline(stage("s", parallel(shell("a"), approval("approve"))))))
    result = await role.cli("run", str(bad))
    assert result.exit_code == 1
    error = _one_line_error(result)
    assert (
        "pipeline.stages[0].stage.spec.execution.steps[0].parallel[1].step: approval steps cannot run in parallel"
        in (error)
    )

    unknown_type = tmp_path / "type.yaml"
    unknown_type.write_text(EXAMPLE.read_text().replace("type: Wait", "type: K8sBlueGreenSwap"))
    result = await role.cli("run", str(unknown_type))
    assert result.exit_code == 1
    assert "steps[1].step.type: unknown step type 'K8sBlueGreenSwap'" in _one_line_error(result)

    unknown_service = tmp_path / "ref.yaml"
    unknown_service.write_text(EXAMPLE.read_text().replace("serviceRef: payments_worker", "serviceRef: billing"))
    result = await role.cli("run", str(unknown_service), "--catalog", str(CATALOG))
    assert result.exit_code == 1
    assert "spec.services.values[1].serviceRef: unknown service 'billing'" in _one_line_error(result)

    result = await role.cli("run", str(EXAMPLE), "--var", "no-equals-sign")
    assert result.exit_code == 2 and "expected NAME=VALUE" in _one_line_error(result)
    result = await role.cli("run", str(EXAMPLE), "--var", "nope=1")
    assert result.exit_code == 1 and "unknown pipeline variable 'nope'" in _one_line_error(result)
    result = await role.cli("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "cannot read" in _one_line_error(result)


async def test_run_then_get_pipeline_state_shows_the_token_and_abort_cancels_the_gate(role, tmp_path: Path) -> None:
    path, pipeline_id = _own_copy(tmp_path, EXAMPLE.read_text(), "checkout_blue_green")
    result = await role.cli("run", str(path), "--catalog", str(CATALOG), "--var", "tag=2.0.0")
    assert result.exit_code == 0, result.output
    execution_id = result.stdout.strip()

    request = await role.wait_for(wire.ApprovalRequested.event_type, execution_id)
    assert request.triggered_by.user == "alice" and request.current_stage.artifacts[0].tag == "2.0.0"
    opened = gate_opened(request)
    await role.send(opened)
    await role.wait_consumed(await role.send(opened))  # a redelivered GateOpened is the same gate

    result = await role.cli("get-pipeline-state", "--name", pipeline_id, "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["pipelineName"] == pipeline_id
    (staging, production) = state["stageStates"]
    assert staging["stageName"] == "staging_blue_green" and staging["latestExecution"]["status"] == "InProgress"
    actions = {action["actionName"]: action for action in staging["actionStates"]}
    assert actions["deploy_green"]["latestExecution"]["status"] == "Succeeded"
    waiting = actions["Harness_Approval_Step"]["latestExecution"]
    assert waiting == {**waiting, "status": "InProgress", "token": opened.token, "summary": "Test"}
    assert "latestExecution" not in actions["swap_primary"] and "latestExecution" not in production

    text = await role.cli("get-pipeline-state", "--name", pipeline_id)
    assert f"token {opened.token}" in text.stdout

    listed = json.loads((await role.cli("executions", "--json", "--pipeline", pipeline_id)).stdout)
    assert [(e["execution_id"], e["status"]) for e in listed] == [(execution_id, "RUNNING")]
    assert listed[0]["current"] == ["staging_blue_green.Harness_Approval_Step (WAITING_APPROVAL)"]

    result = await role.cli("abort", execution_id, "--reason", "not mine", user="bob")
    assert result.exit_code == 1 and "refused (not_permitted)" in _one_line_error(result)
    result = await role.cli("abort", execution_id, "--reason", "wrong tag")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"execution {execution_id} aborted: aborted by alice: wrong tag"
    cancel = await role.wait_for(wire.ApprovalCancelRequested.event_type, execution_id)
    assert cancel.gate_id == opened.gate_id

    result = await role.cli("abort", execution_id)
    assert result.exit_code == 1 and "already ended (aborted)" in _one_line_error(result)
    result = await role.cli("get-pipeline-state", "--name", "no_such_pipeline")
    assert result.exit_code == 1 and "no execution of pipeline" in _one_line_error(result)


async def test_run_wait_reports_success_failure_and_the_executors_refusal(role, tmp_path: Path) -> None:
    good, _ = _own_copy(tmp_path, as_yaml(pipeline(stage("s", shell("hello", "echo hello")))), "test_pipeline")
    result = await role.cli("run", str(good), "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    execution_id, outcome = result.stdout.strip().splitlines()
    assert outcome == f"execution {execution_id} succeeded"
    assert (await role.logs(execution_id))["s.hello"].strip() == "hello"
    shown = await role.cli("logs", execution_id)
    assert shown.exit_code == 0 and shown.stdout == "== s.hello (attempt 1, exit 0)\nhello\n"
    missing = await role.cli("logs", "no-such-execution")
    assert missing.exit_code == 1 and "no execution no-such-execution" in _one_line_error(missing)

    failing, _ = _own_copy(tmp_path, as_yaml(pipeline(stage("s", shell("boom", "exit 3")))), "test_pipeline")
    result = await role.cli("run", str(failing), "--wait", "--timeout", "60")
    assert result.exit_code == 1
    assert "failed: step s.boom failed: the script exited with code 3" in _one_line_error(result)

    # Without --catalog the CLI cannot check refs; the executor checks them against its own catalog.
    refused, _ = _own_copy(
        tmp_path, EXAMPLE.read_text().replace("environmentRef: staging", "environmentRef: qa"), "checkout_blue_green"
    )
    result = await role.cli("run", str(refused), "--wait", "--timeout", "60")
    assert result.exit_code == 1
    error = _one_line_error(result)
    assert "the executor refused execution" in error and "unknown environment 'qa'" in error


async def test_the_api_refuses_an_invalid_pipeline_naming_the_field_and_lets_an_admin_abort(
    role, tmp_path: Path
) -> None:
    async with role.pool.acquire() as conn:
        _, admin_token = await issue_token(
            conn, ApiRepository(), user="root", name="ops", permissions=("admin",), lifetime=timedelta(hours=1),
            now=datetime.now(UTC),
        )  # fmt: skip
    headers = {"Authorization": f"Bearer {role.tokens['alice']}"}
    async with httpx.AsyncClient(base_url=f"{role.api.url}/api/v1", headers=headers) as alice:
        bad = await alice.post(
            "/executions", json={"pipeline_yaml": as_yaml(pipeline(stage("s", parallel(shell("a"), approval("x")))))}
        )
        unknown = await alice.post("/executions", json={"pipeline_yaml": "pipeline: {}", "surprise": 1})
        path, _ = _own_copy(tmp_path, EXAMPLE.read_text(), "checkout_blue_green")
        started = await alice.post("/executions", json={"pipeline_yaml": path.read_text(), "variables": {"tag": "1"}})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_pipeline"
    assert bad.json()["errors"][0]["field"] == "pipeline_yaml" and "cannot run in parallel" in bad.json()["detail"]
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "surprise"
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]
    assert started.json()["triggered_by"] == "alice"
    await role.wait_for(wire.ApprovalRequested.event_type, execution_id)

    async with httpx.AsyncClient(
        base_url=f"{role.api.url}/api/v1", headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
    ) as admin:
        aborted = await admin.post(f"/executions/{execution_id}/abort", json={"reason": "freeze"})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "ABORTED" and "aborted by root: freeze" in aborted.json()["reason"]


async def test_an_alias_bomb_is_a_short_422_and_a_one_line_cli_error_and_the_api_answers_meanwhile(
    role, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {role.tokens['alice']}"}
    async with httpx.AsyncClient(base_url=f"{role.api.url}/api/v1", headers=headers, timeout=60) as alice:
        bomb, me = await asyncio.gather(
            alice.post("/executions", json={"pipeline_yaml": alias_bomb(), "variables": {}}), alice.get("/me")
        )
    assert bomb.status_code == 422 and bomb.headers["content-type"].startswith("application/problem+json")
    assert bomb.json()["code"] == "invalid_pipeline" and bomb.json()["errors"][0]["field"] == "pipeline_yaml"
    assert "the document expands to more than" in bomb.json()["detail"] and len(bomb.content) < 2000
    assert me.status_code == 200 and me.json()["user"] == "alice"

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    result = await role.cli("run", str(path))
    assert result.exit_code == 1
    assert "YAML aliases" in _one_line_error(result)
