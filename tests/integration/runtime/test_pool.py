"""The pool gives back connections without the session's leftovers, though it skips asyncpg's reset query (one
round trip per release): an open transaction is rolled back and a removed listener no longer LISTENs."""

from __future__ import annotations

import asyncio

import pytest

from signoff.runtime.db import create_pool

pytestmark = pytest.mark.integration


async def test_a_released_connection_keeps_no_transaction_and_no_listen(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)  # one connection: the next acquire gets it back
    try:
        conn = await pool.acquire()
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("CREATE TEMP TABLE leftover (n int)")
        await pool.release(conn)  # mid-transaction, as a task cancelled inside one would leave it
        async with pool.acquire() as again:
            assert again.is_in_transaction() is False
            assert await again.fetchval("SELECT to_regclass('pg_temp.leftover')") is None  # rolled back
        listener = await pool.acquire()
        callback = lambda *_: None  # noqa: E731
        await listener.add_listener("signoff_pool_test", callback)
        await listener.remove_listener("signoff_pool_test", callback)  # the owner's clean-up: UNLISTEN
        await pool.release(listener)
        async with pool.acquire() as again:
            assert await again.fetch("SELECT pg_listening_channels()") == []
    finally:
        await asyncio.wait_for(pool.close(), 10)
