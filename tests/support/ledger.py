"""A minimal service for testing the shared runtime: it records every event it applies in `ledger.applied`
(no unique constraint, so an event applied twice shows up as two rows) and can be told to refuse an event."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from signoff.runtime.consumer import Received, UnitOfWork
from signoff.runtime.migrations import migrate

SCHEMA = "ledger"
POISON_SUBJECT = "poison"


async def migrate_ledger(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, SCHEMA, [])
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS ledger.applied (
                   event_id text NOT NULL, subject text, topic text, partition int, "offset" bigint,
                   applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
        )
    finally:
        await conn.close()


class LedgerHandler:
    """Applies events by inserting them; refuses (raises) on the poison subject; can pause mid-batch."""

    def __init__(self) -> None:
        self.pause: asyncio.Event | None = None
        self.paused = asyncio.Event()
        self.lose_connection_once = False

    async def apply(self, uow: UnitOfWork, batch: Sequence[Received]) -> None:
        await uow.conn.executemany(
            'INSERT INTO ledger.applied (event_id, subject, topic, partition, "offset") VALUES ($1, $2, $3, $4, $5)',
            [(r.event.id, r.event.subject, r.topic, r.partition, r.offset) for r in batch],
        )
        if self.lose_connection_once:
            # The server ends this session mid-transaction, as a restart or failover would.
            self.lose_connection_once = False
            await uow.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        if any(r.event.subject == POISON_SUBJECT for r in batch):
            raise ValueError("this handler refuses the poison subject")
        if self.pause is not None:
            self.paused.set()
            await self.pause.wait()


async def applied(dsn: str) -> dict[str, int]:
    """event id -> how many times it was applied."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT event_id, count(*) AS n FROM ledger.applied GROUP BY event_id")
    finally:
        await conn.close()
    return {row["event_id"]: row["n"] for row in rows}
