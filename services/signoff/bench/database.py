"""The benchmark's SQL: its own database, progress counts, and filler gates for the 1M-pending measurement."""

from __future__ import annotations

import contextlib

import asyncpg

from signoff import contracts as wire


async def create_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE `name` on the server of `admin_dsn` (a fresh one per run, so counts start at zero)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def gates_of(pool: asyncpg.Pool, pipeline: str) -> int:
    """Gates of `pipeline` persisted."""
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM approval.gates WHERE pipeline_id = $1", pipeline))


async def published_opened(pool: asyncpg.Pool, pipeline: str) -> int:
    """GateOpened events of `pipeline`'s gates published: the relay marked the row sent after the broker
    acknowledged it."""
    async with pool.acquire() as conn:
        published = await conn.fetchval(
            """SELECT count(*) FROM approval.outbox o JOIN approval.gates g ON g.id = o.aggregateid
               WHERE o.type = $1 AND g.pipeline_id = $2 AND o.sent_at IS NOT NULL""",
            wire.GateOpened.event_type,
            pipeline,
        )
    return int(published)


async def pending_tokens(pool: asyncpg.Pool, pipeline: str, limit: int) -> list[tuple[str, str]]:
    """(gate id, token) of up to `limit` pending gates of `pipeline`."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, token FROM approval.gates WHERE pipeline_id = $1 AND status = 'pending' LIMIT $2",
            pipeline,
            limit,
        )
    return [(row["id"], row["token"]) for row in rows]


async def pending_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM approval.gates WHERE status = 'pending'"))


async def add_filler_gates(pool: asyncpg.Pool, template_gate: str, count: int, chunk: int = 100_000) -> None:
    """`count` more pending gates, copies of `template_gate` (same request, policy and size) spread over 1,000
    pipelines with their own execution ids and tokens, inserted server-side in chunks."""
    done = 0
    while done < count:
        size = min(chunk, count - done)
        async with pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO approval.gates (id, pipeline_id, execution_id, stage_id, step_id, attempt, token,
                       policy, inputs, pipeline_executor, members_by_group, opened_at, expires_at, timeout_action,
                       request, pipeline_name, stage_name, step_name, environments)
                   SELECT 'filler-' || i, 'filler-' || (i % 1000), 'exec-' || i, stage_id, step_id, attempt,
                       md5(random()::text) || md5(random()::text), policy, inputs, pipeline_executor,
                       members_by_group, opened_at, expires_at, timeout_action, request, pipeline_name,
                       stage_name, step_name, environments
                   FROM approval.gates t, generate_series($2::bigint, $3::bigint) AS i
                   WHERE t.id = $1""",
                template_gate,
                done,
                done + size - 1,
            )
        async with pool.acquire() as conn:
            # Whoever may decide the template may decide its copies (the api's `mine=true` reads these rows).
            await conn.execute(
                """INSERT INTO approval.gate_approvers (user_key, opened_at, gate_id)
                   SELECT a.user_key, a.opened_at, 'filler-' || i
                   FROM approval.gate_approvers a, generate_series($2::bigint, $3::bigint) AS i
                   WHERE a.gate_id = $1""",
                template_gate,
                done,
                done + size - 1,
            )
        done += size
    async with pool.acquire() as conn:
        # Statistics for the planner, and the WAL of a million inserts flushed now rather than during what is
        # measured next.
        await conn.execute("ANALYZE approval.gates")
        await conn.execute("ANALYZE approval.gate_approvers")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # needs pg_checkpoint on a shared server
            await conn.execute("CHECKPOINT")


async def server_version(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return str(await conn.fetchval("SHOW server_version"))


async def replay_deliveries(pool: asyncpg.Pool) -> int:
    """Make every notifier delivery due again (as never tried), for a restarted notifier to send them again.
    Returns how many."""
    async with pool.acquire() as conn:
        result = await conn.execute(
            """UPDATE notifier.deliveries SET status = 'pending', attempts = 0, sent_at = NULL,
                   next_attempt_at = now() - interval '1 second'"""
        )
    return int(result.split()[-1])
