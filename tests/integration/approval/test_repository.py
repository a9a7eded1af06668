"""Repository behaviour that the handler tests cannot provoke: concurrent transactions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from importlib import resources

import asyncpg
import pytest

from signoff.approval.repository import SCHEMA, ApprovalRepository, NewGate, NewVote, SeenDecision
from signoff.runtime.db import create_pool
from tests.integration.approval.conftest import START
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def gate(gate_id: str, execution: str) -> NewGate:
    return NewGate(
        id=gate_id,
        pipeline_id="p",
        execution_id=execution,
        stage_id="s",
        step_id="a",
        attempt=1,
        token="t",
        policy="{}",
        inputs="[]",
        pipeline_executor=None,
        members_by_group="{}",
        opened_at=START,
        expires_at=START + timedelta(hours=1),
        timeout_action="fail",
        request="{}",
    )


def vote(gate_id: str) -> NewVote:
    return NewVote(
        gate_id=gate_id,
        decision_id="d-1",
        source="cli",
        approver="bob",
        status="approve",
        comment="",
        inputs={},
        decided_at=START,
        at=START,
    )


async def test_natural_key_conflicts_are_skipped_set_based(database_url: str) -> None:
    repository = ApprovalRepository()
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:
            assert await repository.insert_gates(conn, [gate("g1", "e1"), gate("g2", "e2")]) == ["g1", "g2"]
            assert await repository.insert_gates(conn, [gate("g3", "e1"), gate("g4", "e3")]) == ["g4"]
    finally:
        await pool.close()


async def record_vote(repository: ApprovalRepository, conn: asyncpg.Connection, gate_id: str) -> None:
    await repository.record_votes(conn, [vote(gate_id)], replaced=[])


async def remember_decision(repository: ApprovalRepository, conn: asyncpg.Connection, gate_id: str) -> None:
    await repository.remember_decisions(conn, [SeenDecision("d-1", "cli", gate_id, START)])


@pytest.mark.parametrize("write", [record_vote, remember_decision], ids=["vote", "decision id"])
async def test_a_decision_id_recorded_concurrently_is_a_transient_error(database_url: str, write) -> None:
    """The loser of the race (both transactions found the id unseen) gets SerializationError (retried by the
    consumer loop, which then refuses the replay as a duplicate) rather than a unique violation (which would
    dead-letter it) or nothing (which would count the replay)."""
    repository = ApprovalRepository()
    pool = await create_pool(database_url)
    first, second = await pool.acquire(), await pool.acquire()
    try:
        await repository.insert_gates(first, [gate("g1", "e1"), gate("g2", "e2")])
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await write(repository, first, "g1")
        await second_tx.start()
        racing = asyncio.create_task(write(repository, second, "g2"))

        async def blocked() -> bool:
            async with pool.acquire() as conn:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )

        await eventually(blocked, timeout=10, what="the second insert waiting on the first")
        await first_tx.commit()
        with pytest.raises(asyncpg.exceptions.SerializationError):
            await racing
        await second_tx.rollback()
    finally:
        await pool.release(first)
        await pool.release(second)
        await pool.close()


async def test_the_environment_type_of_gates_stored_before_it_was_a_column_is_filled_in(database_url: str) -> None:
    """sql/0006 fills the new column from each stored request document (the rule of `mapping.environment_type`)."""
    migration = (resources.files("signoff.approval.sql") / "0006_gate_environment_type.sql").read_text()
    backfill = migration[migration.index("UPDATE") :].replace("{schema}", SCHEMA)
    stages = {
        "e1": [{"ref": "prod", "type": "Production"}, {"ref": "stg", "type": "PreProduction"}],
        "e2": [{"ref": "stg", "type": "PreProduction"}],
        "e3": [{"ref": "dev"}],
        "e4": None,
    }
    stored = [
        dataclasses.replace(
            gate(f"g-{execution}", execution),
            request=json.dumps({"current_stage": {"environments": environments}} if environments else {}),
        )
        for execution, environments in stages.items()
    ]
    repository = ApprovalRepository()
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await repository.insert_gates(conn, stored)
            await conn.execute(backfill)
            rows = await conn.fetch(f'SELECT id, environment_type FROM "{SCHEMA}".gates ORDER BY id')  # noqa: S608
    finally:
        await pool.close()
    assert [(row["id"], row["environment_type"]) for row in rows] == [
        ("g-e1", "production"),
        ("g-e2", "preproduction"),
        ("g-e3", "none"),
        ("g-e4", "none"),
    ]
