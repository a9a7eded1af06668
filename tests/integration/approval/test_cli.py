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

from signoff.approval.domain.clock import FixedClock
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import KEY, START

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
    try:
        yield Role(service, producer, pool, env)
    finally:
        await producer.stop()
        await pool.close()
        await service.stop()


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
