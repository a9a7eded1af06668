"""The asyncpg connection pool: built in a service's lifespan, never at import time."""

from __future__ import annotations

import json

import asyncpg

from signoff.runtime.settings import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come and go as Python objects, so no call site (de)serialises by hand.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does first (roll back an open transaction,
    drop the listener callbacks). Its default reset adds a query (`UNLISTEN *; RESET ALL; CLOSE ALL;
    pg_advisory_unlock_all()`), one more round trip on every release, for session state this code never leaves on a
    connection: advisory locks are transaction-scoped, nothing is SET for the session, cursors live only inside
    transactions, and whoever LISTENs removes its listener (UNLISTEN) before it gives the connection back."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode json/jsonb to Python values."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
    )


async def pool_from_settings(settings: Settings) -> asyncpg.Pool:
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
    )
