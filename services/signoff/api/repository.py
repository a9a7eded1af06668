"""All SQL of the api's own schema (`api`): idempotency keys and the requests it refused before they reached the
approval service. (The approval and executor schemas are read through their services' repositories, read-only.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

SCHEMA = "api"


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to a request that carried an Idempotency-Key."""

    request_digest: bytes
    status_code: int
    body: dict[str, Any]


class ApiRepository:
    """The api schema's tables."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.schema = schema

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    async def stored_answer(self, conn: asyncpg.Connection, user: str, key: str) -> StoredAnswer | None:
        row = await conn.fetchrow(
            f"SELECT request_digest, status_code, body FROM {self._t('idempotency_keys')} WHERE user_id = $1 AND key = $2",  # noqa: S608, E501
            user,
            key,
        )
        if row is None:
            return None
        return StoredAnswer(bytes(row["request_digest"]), row["status_code"], row["body"])

    async def store_answer(
        self, conn: asyncpg.Connection, user: str, key: str, answer: StoredAnswer, at: datetime
    ) -> None:
        """Keep the first answer only: a concurrent repeat that finished first wins."""
        await conn.execute(
            f"""INSERT INTO {self._t("idempotency_keys")} (user_id, key, request_digest, status_code, body, created_at)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",  # noqa: S608
            user,
            key,
            answer.request_digest,
            answer.status_code,
            answer.body,
            at,
        )

    async def record_denial(
        self,
        conn: asyncpg.Connection,
        *,
        gate_id: str,
        reason: str,
        actor: str | None,
        credential: str | None,
        detail: Mapping[str, Any],
        at: datetime,
    ) -> None:
        """A request naming `gate_id` that the api refused before the approval service saw it (e.g. no or bad
        credentials): part of that gate's audit trail."""
        await conn.execute(
            f"""INSERT INTO {self._t("access_denials")} (gate_id, reason, actor, credential, detail, at)
                VALUES ($1, $2, $3, $4, $5, $6)""",  # noqa: S608
            gate_id,
            reason,
            actor,
            credential,
            dict(detail),
            at,
        )

    async def denials_of_gate(self, conn: asyncpg.Connection, gate_id: str) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"""SELECT seq, gate_id, reason, actor, credential, detail, at FROM {self._t("access_denials")}
                WHERE gate_id = $1 ORDER BY seq""",  # noqa: S608
            gate_id,
        )
