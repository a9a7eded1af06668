"""All SQL of the api role's own `api` schema: API tokens, access keys, idempotency keys, Slack interactions seen,
the approval pages' signed-out sessions, and the requests it refused before they reached the approval service. (The
approval and executor schemas are read through their services' repositories, read-only.) Methods take the connection
of the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

SCHEMA = "api"
_TOKEN_COLUMNS = "id, user_id, name, permissions, created_at, expires_at, last_used_at, revoked_at"  # noqa: S105

# A token's last use is written at most this often: one UPDATE per request would turn every read into a write.
TOUCH_INTERVAL = timedelta(minutes=1)
DENIAL_REPEAT_WINDOW = timedelta(minutes=1)
"""The same refusal again within this of the last one is counted on its row (`access_denials.repeated`)."""


@dataclass(frozen=True)
class ApiToken:
    """An API token as stored: everything but its text (which is never stored) and its digest (which no caller
    needs after the lookup)."""

    id: str
    user_id: str
    name: str
    permissions: frozenset[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """`active`, `expired` or `revoked` at `now` (revocation wins: it is the operator's explicit word)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class AccessKey:
    """An access key as stored: its id, its user and its state; the encrypted secret only where a caller asked
    for it (to verify a signature)."""

    id: str
    user_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    secret_ciphertext: bytes | None = None

    def state(self) -> str:
        """`active` or `revoked` (access keys do not expire; revoke one to end it)."""
        return "revoked" if self.revoked_at is not None else "active"


_ACCESS_KEY_COLUMNS = "id, user_id, created_at, last_used_at, revoked_at"


def _access_key(row: asyncpg.Record, *, with_secret: bool = False) -> AccessKey:
    return AccessKey(
        id=row["id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        secret_ciphertext=bytes(row["secret_ciphertext"]) if with_secret else None,
    )


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to a request that carried an Idempotency-Key."""

    request_digest: bytes
    status_code: int
    body: dict[str, Any]


def _token(row: asyncpg.Record) -> ApiToken:
    return ApiToken(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        permissions=frozenset(row["permissions"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class ApiRepository:
    """The api schema's tables."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.schema = schema

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # ------------------------------------------------------------------------------------------------ tokens

    async def create_token(
        self,
        conn: asyncpg.Connection,
        *,
        token_id: str,
        user_id: str,
        name: str,
        digest: bytes,
        permissions: Iterable[str],
        created_at: datetime,
        expires_at: datetime,
    ) -> ApiToken:
        """Store a new token by the SHA-256 `digest` of its text (never the text itself)."""
        row = await conn.fetchrow(
            f"""INSERT INTO {self._t("tokens")}
                    (id, user_id, name, token_digest, permissions, created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5::text[], $6, $7)
                RETURNING {_TOKEN_COLUMNS}""",  # noqa: S608
            token_id,
            user_id,
            name,
            digest,
            sorted(set(permissions)),
            created_at,
            expires_at,
        )
        assert row is not None
        return _token(row)

    async def token_by_digest(self, conn: asyncpg.Connection, digest: bytes) -> ApiToken | None:
        """The token whose text has SHA-256 `digest`, whatever its state (the caller decides what expired and
        revoked mean). An index lookup on the digest: timing reveals nothing useful, as an attacker would need a
        SHA-256 preimage to steer it."""
        row = await conn.fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM {self._t('tokens')} WHERE token_digest = $1",  # noqa: S608
            digest,
        )
        return _token(row) if row is not None else None

    async def touch_token(self, conn: asyncpg.Connection, token_id: str, now: datetime) -> bool:
        """Record a use of the token at `now`, unless one was recorded less than TOUCH_INTERVAL before (so a busy
        token costs one write a minute, and concurrent requests race harmlessly). True when it wrote."""
        status = await conn.execute(
            f"""UPDATE {self._t("tokens")} SET last_used_at = $2
                WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - $3::interval)""",  # noqa: S608
            token_id,
            now,
            TOUCH_INTERVAL,
        )
        return status == "UPDATE 1"

    async def list_tokens(self, conn: asyncpg.Connection, user_id: str | None = None) -> list[ApiToken]:
        """Every token (of `user_id` when given), oldest first. Never their digests."""
        rows = await conn.fetch(
            f"""SELECT {_TOKEN_COLUMNS} FROM {self._t("tokens")}
                WHERE $1::text IS NULL OR user_id = $1 ORDER BY created_at, id""",  # noqa: S608
            user_id,
        )
        return [_token(row) for row in rows]

    async def token_by_id(self, conn: asyncpg.Connection, token_id: str) -> ApiToken | None:
        row = await conn.fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM {self._t('tokens')} WHERE id = $1",  # noqa: S608
            token_id,
        )
        return _token(row) if row is not None else None

    async def revoke_token(self, conn: asyncpg.Connection, token_id: str, now: datetime) -> ApiToken | None:
        """Revoke the token `token_id` at `now` (a token revoked before keeps its first revocation time). None when
        there is no such token."""
        row = await conn.fetchrow(
            f"""UPDATE {self._t("tokens")} SET revoked_at = coalesce(revoked_at, $2)
                WHERE id = $1 RETURNING {_TOKEN_COLUMNS}""",  # noqa: S608
            token_id,
            now,
        )
        return _token(row) if row is not None else None

    # ------------------------------------------------------------------------------------------------ access keys

    async def create_access_key(
        self, conn: asyncpg.Connection, *, key_id: str, user_id: str, secret_ciphertext: bytes, created_at: datetime
    ) -> AccessKey:
        """Store a new access key with its secret already encrypted (never the secret itself)."""
        row = await conn.fetchrow(
            f"""INSERT INTO {self._t("access_keys")} (id, user_id, secret_ciphertext, created_at)
                VALUES ($1, $2, $3, $4) RETURNING {_ACCESS_KEY_COLUMNS}""",  # noqa: S608
            key_id,
            user_id,
            secret_ciphertext,
            created_at,
        )
        assert row is not None
        return _access_key(row)

    async def access_key_with_secret(self, conn: asyncpg.Connection, key_id: str) -> AccessKey | None:
        """The access key `key_id` with its encrypted secret, whatever its state."""
        row = await conn.fetchrow(
            f"""SELECT {_ACCESS_KEY_COLUMNS}, secret_ciphertext FROM {self._t("access_keys")}
                WHERE id = $1""",  # noqa: S608
            key_id,
        )
        return _access_key(row, with_secret=True) if row is not None else None

    async def touch_access_key(self, conn: asyncpg.Connection, key_id: str, now: datetime) -> bool:
        """Record a use at `now`, at most once per TOUCH_INTERVAL (as for tokens). True when it wrote."""
        status = await conn.execute(
            f"""UPDATE {self._t("access_keys")} SET last_used_at = $2
                WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - $3::interval)""",  # noqa: S608
            key_id,
            now,
            TOUCH_INTERVAL,
        )
        return status == "UPDATE 1"

    async def list_access_keys(self, conn: asyncpg.Connection, user_id: str | None = None) -> list[AccessKey]:
        """Every access key (of `user_id` when given), oldest first; never a secret."""
        rows = await conn.fetch(
            f"""SELECT {_ACCESS_KEY_COLUMNS} FROM {self._t("access_keys")}
                WHERE $1::text IS NULL OR user_id = $1 ORDER BY created_at, id""",  # noqa: S608
            user_id,
        )
        return [_access_key(row) for row in rows]

    async def revoke_access_key(self, conn: asyncpg.Connection, key_id: str, now: datetime) -> AccessKey | None:
        """Revoke `key_id` at `now` (an earlier revocation keeps its time); None when there is no such key."""
        row = await conn.fetchrow(
            f"""UPDATE {self._t("access_keys")} SET revoked_at = coalesce(revoked_at, $2)
                WHERE id = $1 RETURNING {_ACCESS_KEY_COLUMNS}""",  # noqa: S608
            key_id,
            now,
        )
        return _access_key(row) if row is not None else None

    # ------------------------------------------------------------------------------------ idempotency, denials

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
        credentials): part of that gate's audit trail. The same refusal (gate, reason, actor, credential) again
        within DENIAL_REPEAT_WINDOW of the last row is counted on that row (`repeated`) instead of a row of its
        own, so requests nobody authenticated cannot grow a gate's trail without bound."""
        table = self._t("access_denials")
        await conn.execute(
            f"""WITH recent AS (
                    SELECT seq FROM {table}
                    WHERE gate_id = $1 AND reason = $2 AND actor IS NOT DISTINCT FROM $3
                      AND credential IS NOT DISTINCT FROM $4 AND at > $6::timestamptz - $7::interval
                    ORDER BY seq DESC LIMIT 1
                ), counted AS (
                    UPDATE {table} d SET repeated = d.repeated + 1 FROM recent WHERE d.seq = recent.seq
                    RETURNING d.seq
                )
                INSERT INTO {table} (gate_id, reason, actor, credential, detail, at)
                SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM counted)""",  # noqa: S608
            gate_id,
            reason,
            actor,
            credential,
            dict(detail),
            at,
            DENIAL_REPEAT_WINDOW,
        )

    async def remember_slack_interaction(
        self, conn: asyncpg.Connection, digest: bytes, at: datetime, keep: timedelta
    ) -> bool:
        """Record a Slack interaction by its digest; False when it was seen before (a replay). Entries older than
        `keep` are dropped on the way."""
        await conn.execute(
            f"DELETE FROM {self._t('slack_interactions')} WHERE received_at < $1",  # noqa: S608
            at - keep,
        )
        row = await conn.fetchrow(
            f"""INSERT INTO {self._t("slack_interactions")} (digest, received_at) VALUES ($1, $2)
                ON CONFLICT DO NOTHING RETURNING digest""",  # noqa: S608
            digest,
            at,
        )
        return row is not None

    # ------------------------------------------------------------------------------------------------ page sessions

    async def revoke_session(
        self, conn: asyncpg.Connection, session_id: str, expires_at: datetime, now: datetime
    ) -> None:
        """Record that the pages' session `session_id` ended (a sign-out) and must be refused until `expires_at`,
        when it would have run out anyway. Entries already past their expiry are dropped on the way."""
        await conn.execute(
            f"DELETE FROM {self._t('revoked_sessions')} WHERE expires_at < $1",  # noqa: S608
            now,
        )
        await conn.execute(
            f"""INSERT INTO {self._t("revoked_sessions")} (session_id, expires_at) VALUES ($1, $2)
                ON CONFLICT (session_id) DO UPDATE SET expires_at = greatest(
                    {self._t("revoked_sessions")}.expires_at, excluded.expires_at)""",  # noqa: S608
            session_id,
            expires_at,
        )

    async def session_revoked(self, conn: asyncpg.Connection, session_id: str) -> bool:
        """Whether the pages' session `session_id` was signed out (a pruned entry's session has expired anyway)."""
        return bool(
            await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {self._t('revoked_sessions')} WHERE session_id = $1)",  # noqa: S608
                session_id,
            )
        )

    async def denials_of_gate(self, conn: asyncpg.Connection, gate_id: str) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"""SELECT seq, gate_id, reason, actor, credential, detail, at, repeated FROM {self._t("access_denials")}
                WHERE gate_id = $1 ORDER BY seq""",  # noqa: S608
            gate_id,
        )
