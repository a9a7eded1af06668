"""Test fixtures on real infrastructure: one broker and one PostgreSQL server per test session (see
tests/support/infra.py for how they are chosen), a fresh database per test cloned from a migrated template, and
unique topic and consumer-group names per test. Under pytest-xdist each worker is a session of its own: its own
embedded broker and server, or, on shared external ones, a template database of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from signoff.runtime.logging import configure_logging
from signoff.runtime.migrations import migrate_all
from signoff.runtime.settings import Settings
from tests.support.infra import Infra, provide_infra

# One template per xdist worker (`gw0`, `gw1`; `main` without xdist): a worker rebuilding its template must not
# drop the one another worker is cloning from a shared server.
TEMPLATE_DB = f"signoff_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"

# Roles run in-process here while click's CliRunner swaps sys.stdout for a command's output: bind their logs to
# the process's own stderr, so what a command printed is all its captured stdout holds.
configure_logging("info", "console", stream=sys.__stderr__)


def run_sync(coro):
    """Run a coroutine to completion from sync code, even while another loop runs on this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with provide_infra() as provided:
        yield provided


@pytest.fixture(scope="session")
def template_database(infra: Infra) -> str:
    """A database with every service schema migrated; each test clones it (CREATE DATABASE … TEMPLATE)."""

    async def build() -> None:
        admin = await asyncpg.connect(infra.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        await migrate_all(infra.dsn(TEMPLATE_DB))

    run_sync(build())
    return TEMPLATE_DB


@contextlib.asynccontextmanager
async def fresh_database(infra: Infra, template_database: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database (a copy of the template), dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    try:
        yield infra.dsn(name)
    finally:
        admin = await asyncpg.connect(infra.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def infra_settings(infra: Infra, database_url: str) -> Settings:
    """Settings pointing at `database_url` and the session's broker (short group timeouts)."""
    return Settings(
        kafka_bootstrap=infra.kafka_bootstrap,
        kafka_enable_idempotence=infra.enable_idempotence,
        kafka_session_timeout_ms=infra.session_timeout_ms,
        kafka_heartbeat_interval_ms=max(100, infra.session_timeout_ms // 4),
        kafka_topic_partitions=3,
        database_url=database_url,
        http_port=0,
        log_format="console",
    )


@pytest.fixture
async def database_url(infra: Infra, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    async with fresh_database(infra, template_database) as url:
        yield url


class Names:
    """Unique topic and consumer-group names, so tests sharing one broker never see each other's messages."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:10]

    def topic(self, base: str) -> str:
        return f"{base}.t{self.suffix}"

    def group(self, base: str) -> str:
        return f"{base}-t{self.suffix}"


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
def settings(infra: Infra, database_url: str) -> Settings:
    """Settings pointing at this test's database and the session's broker (short group timeouts)."""
    return infra_settings(infra, database_url)
