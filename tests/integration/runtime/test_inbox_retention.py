"""The inbox forgets applied event ids after SIGNOFF_INBOX_RETENTION_DAYS (it grew by a row per event forever),
in chunks, and a running role does it on its own."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from signoff.runtime import consumer as consumer_module
from signoff.runtime import service as service_module
from signoff.runtime.consumer import prune_inbox
from signoff.runtime.service import Service, ServiceSpec
from tests.support.ledger import SCHEMA, LedgerHandler, migrate_ledger
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


async def _insert(conn: asyncpg.Connection, consumer: str, ages_in_days: list[float]) -> None:
    await conn.executemany(
        f"""INSERT INTO "{SCHEMA}".inbox (consumer, event_id, source, topic, partition, "offset", received_at)
            VALUES ($1, $2, 'urn:test', 't', 0, $3, now() - make_interval(secs => $4))""",  # noqa: S608
        [(consumer, f"event-{index}", index, age * 86_400) for index, age in enumerate(ages_in_days)],
    )


async def _left(conn: asyncpg.Connection, consumer: str) -> list[str]:
    rows = await conn.fetch(
        f'SELECT event_id FROM "{SCHEMA}".inbox WHERE consumer = $1 ORDER BY "offset"',  # noqa: S608
        consumer,
    )
    return [row["event_id"] for row in rows]


async def test_rows_older_than_the_retention_are_deleted_in_chunks_and_the_rest_kept(database_url, monkeypatch):
    monkeypatch.setattr(consumer_module, "INBOX_PRUNE_CHUNK", 3)  # 7 old rows: three DELETEs, the last one short
    await migrate_ledger(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await _insert(conn, "pruned", [40, 31, 0.5, 45, 30.01, 29.9, 60, 90, 1, 100])
        assert await prune_inbox(conn, SCHEMA, timedelta(days=30)) == 7
        assert await _left(conn, "pruned") == ["event-2", "event-5", "event-8"]  # 0.5, 29.9 and 1 day old
        assert await prune_inbox(conn, SCHEMA, timedelta(days=30)) == 0
    finally:
        await conn.close()


async def test_a_running_role_prunes_its_inbox(settings, names, database_url, monkeypatch):
    monkeypatch.setattr(service_module, "INBOX_PRUNE_INTERVAL_SECONDS", 0.05)
    await migrate_ledger(database_url)
    spec = ServiceSpec(
        name="ledger",
        schema=SCHEMA,
        migrations_package=None,
        consumes=[names.topic("signoff.test.inbox")],
        produces=[],
        handler=lambda _ctx: LedgerHandler(),
        group_id=names.group("inbox"),
    )
    service = Service(spec, settings.model_copy(update={"inbox_retention_days": 2.0, "http_host": "127.0.0.1"}))
    await service.start()
    try:
        async with service.pool.acquire() as conn:
            await _insert(conn, "role", [3, 1, 2.5])

            async def pruned() -> bool:
                return await _left(conn, "role") == ["event-1"]

            await eventually(pruned, what="the rows older than two days deleted by the role")
        pruner = next(t for t in service._tasks if t.get_name() == "inbox-pruner")
        assert not pruner.done()
    finally:
        await service.stop()
