"""The front door on real infrastructure: the approval role and the api role running in this process on the real
broker and PostgreSQL (the real topic names, as the roles use them; tests tell their events apart by ids), API
tokens issued the way `signoff tokens create` issues them, and an HTTP client per user."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from signoff import contracts as wire
from signoff.api.identity import issue_token
from signoff.api.repository import ApiRepository
from signoff.api.service import ApiRole
from signoff.api.settings import ApiSettings
from signoff.approval.repository import SCHEMA
from signoff.approval.service import REQUESTS_TOPIC, approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import make_producer
from signoff.runtime.service import Service
from tests.support.waiting import eventually

API_KEY = "api-decision-key-for-tests"
SLACK_KEY = "slack-decision-key-for-tests"
DIRECTORY = """groups:
  docs:
    - {user: dana, email: dana@example.com, slack: UDANA0001}
    - {user: eli, email: eli@example.com, slack: UELI00001}
  sre:
    - {user: alice, email: alice@example.com}
    - {user: bob, email: bob@example.com, slack: UBOB00001}
    - carol
"""


class FrontDoor:
    """The running approval + api roles, tokens per user, and helpers to open gates and call the API or the CLI."""

    def __init__(self, approval: Service, api: ApiRole, producer, pool, tmp_path: Path) -> None:
        self.approval, self.api, self.producer, self.pool, self.tmp_path = approval, api, producer, pool, tmp_path
        self.tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.api.url

    async def token(self, user: str, *permissions: str) -> str:
        key = f"{user}:{','.join(sorted(permissions))}"
        if key not in self.tokens:
            async with self.pool.acquire() as conn:
                _, text = await issue_token(
                    conn,
                    ApiRepository(),
                    user=user,
                    name="test",
                    permissions=permissions,
                    lifetime=timedelta(days=1),
                    now=datetime.now(UTC),
                )
            self.tokens[key] = text
        return self.tokens[key]

    async def client(self, user: str | None, *permissions: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {await self.token(user, *permissions)}"} if user else {}
        return httpx.AsyncClient(base_url=f"{self.url}/api/v1", headers=headers, timeout=60)

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

    async def cli(self, user: str | None, *args: str, **env: str) -> Result:
        """`signoff ARGS` as `user` would run it: only the API's URL and their token in the environment."""
        environment = {
            "SIGNOFF_HOME": str(self.tmp_path / "no-dev-stack"),
            "XDG_CONFIG_HOME": str(self.tmp_path / "config"),
            "SIGNOFF_API_URL": self.url,
            "SIGNOFF_TOKEN": await self.token(user) if user else None,
            "SIGNOFF_DATABASE_URL": None,
            "SIGNOFF_KAFKA_BOOTSTRAP": None,
            **env,
        }
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=environment, catch_exceptions=False)


def pipeline_name() -> str:
    return f"api_{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running_front_door(settings, names, tmp_path: Path, **api_settings: object) -> AsyncIterator[FrontDoor]:
    """The approval and api roles (with `api_settings` on top of the test's) until the block ends."""
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY)
    approval_settings = ApprovalSettings(
        **{
            **settings.model_dump(),
            "decision_keys": json.dumps({"api": API_KEY, "slack": SLACK_KEY}),
            "directory_file": directory,
        }
    )
    spec = dataclasses.replace(approval_spec(approval_settings), group_id=names.group("approval"))
    approval = Service(spec, approval_settings)
    api = ApiRole(
        ApiSettings(
            **{
                **settings.model_dump(),
                "api_decision_key": API_KEY,
                "api_port": 0,
                "api_host": "127.0.0.1",
                "api_decision_wait_seconds": 30,
                **api_settings,
            }
        )
    )
    producer = make_producer(settings, "test-producer")
    pool = await create_pool(settings.database_url.get_secret_value())
    await approval.start()
    await api.start()
    await producer.start()
    try:
        yield FrontDoor(approval, api, producer, pool, tmp_path)
    finally:
        await producer.stop()
        await pool.close()
        await api.stop()
        await approval.stop()


@pytest.fixture
async def front_door(settings, names, tmp_path: Path) -> AsyncIterator[FrontDoor]:
    async with running_front_door(settings, names, tmp_path) as door:
        yield door
