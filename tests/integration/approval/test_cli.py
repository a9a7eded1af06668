"""The directory's admin command (`signoff groups`) against the approval role on the real broker and PostgreSQL: the
CLI is invoked in-process with click's CliRunner (in a worker thread, as it runs its own event loop), configured
only through SIGNOFF_* variables. (The approver's commands are clients of the api: tests/integration/api.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from signoff import contracts as wire
from signoff.approval.repository import SCHEMA
from signoff.approval.service import REQUESTS_TOPIC, approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.runtime.clock import FixedClock
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import KEY, START, request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DIRECTORY = """groups:
  docs:
    - {user: dana, email: dana@example.com}
  sre:
    - {user: bob, email: bob@example.com, slack: U1}
    - carol
"""


class Role:
    """The running approval role and the CLI run against its database."""

    def __init__(self, service: Service, producer, pool, env: dict[str, str]) -> None:
        self.service, self.producer, self.pool, self.env = service, producer, pool, env

    async def open_gate(self, req: wire.ApprovalRequested) -> str:
        """Send `req` to the real requests topic and wait until the role opened its gate; returns the gate id."""
        event = wire.new_event(req, source="urn:signoff:test")
        value, headers = wire.encode(event)
        await self.producer.send_and_wait(REQUESTS_TOPIC, value, key=wire.message_key(event), headers=headers)

        async def opened():
            async with self.pool.acquire() as conn:
                return await conn.fetchval(
                    f'SELECT id FROM "{SCHEMA}".gates WHERE pipeline_id = $1 AND execution_id = $2',  # noqa: S608
                    req.key.pipeline_id,
                    req.key.execution_id,
                )

        return await eventually(opened, timeout=30, what=f"gate for {req.key.as_path()}")

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
    spec = dataclasses.replace(approval_spec(role_settings, FixedClock(START)), group_id=names.group("approval"))
    service = Service(spec, role_settings)
    producer = make_producer(role_settings, "test-producer")
    pool = await create_pool(settings.database_url.get_secret_value())
    env = {
        "SIGNOFF_HOME": str(tmp_path / "home"),  # never a developer's running dev stack
        "SIGNOFF_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence).lower(),
        "SIGNOFF_DATABASE_URL": settings.database_url.get_secret_value(),
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


async def test_groups_load_refuses_a_file_that_would_empty_the_directory(role: Role, tmp_path: Path) -> None:
    file = tmp_path / "groups.yaml"
    file.write_text("groups:\n  release:\n    - frank\n")
    assert (await role.run("groups", "load", str(file))).exit_code == 0
    for text in ("[]", "", "grups: {release: [gina]}"):
        file.write_text(text)
        refused = await role.run("groups", "load", str(file))
        assert refused.exit_code == 1 and refused.stderr.startswith(f"error: {file}: "), refused.stderr
        assert refused.stderr.count("\n") == 1
    listed = json.loads((await role.run("groups", "list", "--json")).stdout)
    assert listed == [{"group": "release", "members": 1}]  # the directory the last good load left


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
