"""The approver's CLI against the whole approval role (as test_service_role.py runs it) on the real broker and
PostgreSQL: the CLI is invoked in-process with click's CliRunner (in a worker thread, as it runs its own event loop)
and configured only through SIGNOFF_* variables, like an approver's shell."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from signoff import contracts as wire
from signoff.approval.domain.clock import FixedClock
from signoff.approval.repository import SCHEMA
from signoff.approval.service import REQUESTS_TOPIC, approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import KEY, request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DIRECTORY = """groups:
  docs:
    - {user: dana, email: dana@example.com}
  sre:
    - {user: bob, email: bob@example.com, slack: U1}
    - carol
"""


def cli_clock() -> FixedClock:
    """The approval role's clock for tests that decide through the CLI, which stamps decisions with the wall clock
    (the role refuses a decision decided too far from its own now)."""
    return FixedClock(datetime.now(UTC))


class Role:
    """The running approval role plus what a test needs around it: send requests, find gates, run the CLI."""

    def __init__(self, service: Service, producer, pool, env: dict[str, str]) -> None:
        self.service, self.producer, self.pool, self.env = service, producer, pool, env

    async def open_gate(self, req: wire.ApprovalRequested) -> tuple[str, str]:
        event = wire.new_event(req, source="urn:signoff:test")
        value, headers = wire.encode(event)
        await self.producer.send_and_wait(REQUESTS_TOPIC, value, key=wire.message_key(event), headers=headers)

        async def opened():
            async with self.pool.acquire() as conn:
                return await conn.fetchrow(
                    f'SELECT id, token FROM "{SCHEMA}".gates WHERE pipeline_id = $1 AND execution_id = $2',  # noqa: S608
                    req.key.pipeline_id,
                    req.key.execution_id,
                )

        row = await eventually(opened, timeout=30, what=f"gate for {req.key.as_path()}")
        return row["id"], row["token"]

    async def status(self, gate_id: str) -> str:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(f'SELECT status FROM "{SCHEMA}".gates WHERE id = $1', gate_id)  # noqa: S608

    async def run(self, *args: str, **env: str | None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli, list(args), env={**self.env, **env}, catch_exceptions=False)


@pytest.fixture
async def role(settings, names, tmp_path: Path) -> AsyncIterator[Role]:
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY)
    role_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"cli": KEY.decode()}, "directory_file": directory}
    )
    spec = dataclasses.replace(approval_spec(role_settings, cli_clock()), group_id=names.group("approval"))
    service = Service(spec, role_settings)
    producer = make_producer(role_settings, "test-producer")
    pool = await create_pool(settings.database_url.get_secret_value())
    env = {
        "SIGNOFF_HOME": str(tmp_path / "home"),  # never a developer's running dev stack
        "SIGNOFF_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence).lower(),
        "SIGNOFF_DATABASE_URL": settings.database_url.get_secret_value(),
        "SIGNOFF_CLI_DECISION_KEY": KEY.decode(),
        "SIGNOFF_DECISION_WAIT_SECONDS": "30",
        "SIGNOFF_USER": "bob",
    }
    await service.start()
    await producer.start()
    running = Role(service, producer, pool, env)
    try:
        yield running
    finally:
        await producer.stop()
        await pool.close()
        await running.service.stop()  # a test may have restarted it


def _pipeline() -> str:
    return f"cli_{uuid.uuid4().hex[:8]}"


async def test_approve_by_gate_id_counts_the_vote(role: Role) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    result = await role.run("approve", gate_id, "--token", token, "--comment", "ship it")
    assert result.exit_code == 0, result.output
    assert f"vote counted: bob approved gate {gate_id}; gate is now approved" in result.stdout
    assert await role.status(gate_id) == "approved"


async def test_reject_by_gate_id_reports_the_rejected_gate(role: Role) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    result = await role.run("reject", gate_id, "--token", token, "--as", "carol", "--comment", "not today")
    assert result.exit_code == 0, result.output
    assert "carol rejected" in result.stdout and "gate is now rejected" in result.stdout


async def test_the_codepipeline_json_file_approves_and_an_old_token_is_refused(role: Role, tmp_path: Path) -> None:
    req = request(pipeline=_pipeline(), stage="approval_stage", step="approval_action", groups=("docs",))
    gate_id, token = await role.open_gate(req)
    doc = {
        "pipelineName": req.key.pipeline_id,
        "stageName": "approval_stage",
        "actionName": "approval_action",
        "token": token,
        "result": {"status": "Approved", "summary": "The new design looks good. Ready to release to customers."},
    }
    approved_file = tmp_path / "approvalstage-approved.json"
    approved_file.write_text(json.dumps(doc))

    result = await role.run("put-approval-result", "--cli-input-json", f"file://{approved_file}", "--as", "dana")
    assert result.exit_code == 0, result.output
    assert f"dana approved gate {gate_id}; gate is now approved" in result.stdout

    again = await role.run(
        "put-approval-result",
        "--pipeline-name",
        req.key.pipeline_id,
        "--stage-name",
        "approval_stage",
        "--action-name",
        "approval_action",
        "--token",
        token,
        "--status",
        "Approved",
        "--summary",
        "again",
        "--as",
        "dana",
    )
    assert again.exit_code == 1
    assert "vote counted" not in again.stdout
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused (")
    assert "(stale_token)" in lines[0] or "(gate_closed)" in lines[0]


async def test_a_refused_vote_exits_1_with_the_reason(role: Role) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    result = await role.run("approve", gate_id, "--token", token, "--as", "mallory")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: refused (not_eligible)")
    assert await role.status(gate_id) == "pending"


async def test_pending_show_and_audit_list_the_gate(role: Role) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d", groups=("sre",)))

    text = await role.run("pending")
    assert text.exit_code == 0 and gate_id in text.stdout
    as_json = await role.run("pending", "--group", "sre", "--json")
    assert gate_id in [g["gate_id"] for g in json.loads(as_json.stdout)]
    other_group = await role.run("pending", "--group", "docs", "--json")
    assert gate_id not in [g["gate_id"] for g in json.loads(other_group.stdout)]

    shown = await role.run("show", gate_id)
    assert shown.exit_code == 0 and gate_id in shown.stdout and token in shown.stdout and "pending" in shown.stdout
    approve = await role.run("approve", gate_id, "--token", token)
    assert approve.exit_code == 0, approve.output
    shown_json = json.loads((await role.run("show", gate_id, "--json")).stdout)
    assert shown_json["gate_id"] == gate_id and shown_json["status"] == "approved"
    assert [(v["approver"], v["status"], v["source"]) for v in shown_json["votes"]] == [("bob", "approve", "cli")]
    assert shown_json["token"] == token and shown_json["policy"]

    audit_text = await role.run("audit", gate_id)
    assert audit_text.exit_code == 0 and gate_id in audit_text.stdout and "actor=bob" in audit_text.stdout
    audit_json = json.loads((await role.run("audit", gate_id, "--json")).stdout)
    assert audit_json["gate_id"] == gate_id
    assert [r["kind"] for r in audit_json["audit"]] == ["requested", "vote", "outcome"]


async def test_invalid_input_gives_one_line_errors(role: Role, tmp_path: Path) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        (("approve", gate_id, "--token", token, "--input", "novalue"), 2, "--input expects NAME=VALUE"),
        (("approve", gate_id), 2, "missing --token"),
        (("put-approval-result", "--cli-input-json", f"file://{tmp_path}/missing.json"), 1, "cannot read"),
        (("put-approval-result", "--cli-input-json", f"file://{bad}"), 1, "is not valid JSON"),
        (("show", "no_such_gate"), 1, "no gate no_such_gate"),
        (("audit", "no_such_gate"), 1, "no gate no_such_gate"),
    ]
    for args, code, message in cases:
        result = await role.run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == code, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    assert await role.status(gate_id) == "pending"


async def test_no_user_is_a_usage_error(role: Role) -> None:
    gate_id, token = await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    result = await role.run("approve", gate_id, "--token", token, SIGNOFF_USER=None)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: who is deciding? pass --as USER or set SIGNOFF_USER"


async def test_groups_load_then_show(role: Role, tmp_path: Path) -> None:
    file = tmp_path / "groups.yaml"
    file.write_text("groups:\n  release:\n    - {user: frank, email: frank@example.com, slack: U9}\n    - gina\n")
    loaded = await role.run("groups", "load", str(file), "--merge")
    assert loaded.exit_code == 0 and "loaded 2 member(s) in 1 group(s)" in loaded.stdout
    shown = await role.run("groups", "show", "release")
    assert shown.exit_code == 0 and "frank" in shown.stdout and "slack=U9" in shown.stdout and "gina" in shown.stdout
    listed = json.loads((await role.run("groups", "list", "--json")).stdout)
    assert {"group": "release", "members": 2} in listed
    missing = await role.run("groups", "show", "nobody_here")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no group nobody_here")


async def test_a_restart_of_the_role_does_not_undo_groups_load_merge(role: Role, tmp_path: Path) -> None:
    """The directory file is loaded once (again only when it changes): what `groups load` did since survives."""
    # The role has loaded its directory file (its first batch does, before it opens a gate): the file's first load
    # replaces the directory, so an admin's change made before it would be replaced once, by design.
    await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    file = tmp_path / "groups.yaml"
    file.write_text("groups:\n  release:\n    - frank\n")
    assert (await role.run("groups", "load", str(file), "--merge")).exit_code == 0
    await role.service.stop()
    role.service = Service(role.service.spec, role.service.settings)  # the same role, same directory file
    await role.service.start()
    # A request applied after the restart: the role's first batch (which loads the directory file) is committed.
    await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    listed = json.loads((await role.run("groups", "list", "--json")).stdout)
    assert {"group": "release", "members": 1} in listed  # the merge survived the restart
    assert {"group": "docs", "members": 1} in listed
    # Editing the directory file makes it the directory again at the next start.
    directory = Path(role.service.settings.directory_file)
    directory.write_text(DIRECTORY + "  ops:\n    - olga\n")  # noqa: ASYNC240 - a small test file
    await role.service.stop()
    role.service = Service(role.service.spec, role.service.settings)
    await role.service.start()
    await role.open_gate(request(pipeline=_pipeline(), timeout="1d"))
    groups = {row["group"] for row in json.loads((await role.run("groups", "list", "--json")).stdout)}
    assert groups == {"docs", "sre", "ops"}  # the file replaced the directory, the merged group with it
