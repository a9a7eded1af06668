"""All SQL of the notifier. Functions take the connection of the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

SCHEMA = "notifier"
WAKE_CHANNEL = "signoff_notifier_deliveries"
"""NOTIFY channel that wakes the dispatcher when deliveries are written."""


@dataclass(frozen=True)
class NewDelivery:
    """A delivery row to insert (rendered message included)."""

    idempotency_key: str
    gate_id: str
    event_id: str
    kind: str
    purpose: str
    channel: str
    channel_type: str
    recipient: str
    max_attempts: int
    content_type: str
    subject: str | None
    body: str
    html: str | None
    headers: Sequence[tuple[str, str]]
    traceparent: str | None = None
    """The trace of the gate event it tells about; its request carries it."""


@dataclass(frozen=True)
class KnownGate:
    """A gate's GateOpened data to store (`opened_json`: the data as JSON text, serialised once)."""

    gate_id: str
    event_id: str
    opened_json: str
    opened_at: datetime
    expires_at: datetime
    traceparent: str | None = None


class NotifierRepository:
    """The notifier schema's tables: gates it knows, deliveries, reminder / escalation schedule."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.schema = schema

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # ------------------------------------------------------------------------------------------------ gates

    async def remember_gates(self, conn: asyncpg.Connection, gates: Sequence[KnownGate]) -> set[str]:
        """Store the GateOpened data of many gates in one statement (a gate already known is left as it is);
        returns the ids of the gates stored now."""
        if not gates:
            return set()
        rows = await conn.fetch(
            f"""INSERT INTO {self._t("gates")} (gate_id, event_id, opened, opened_at, expires_at, traceparent)
                SELECT g, e, o::jsonb, oa, ea, tp
                FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])
                     AS t(g, e, o, oa, ea, tp)
                ON CONFLICT (gate_id) DO NOTHING RETURNING gate_id""",  # noqa: S608
            [g.gate_id for g in gates],
            [g.event_id for g in gates],
            [g.opened_json for g in gates],
            [g.opened_at for g in gates],
            [g.expires_at for g in gates],
            [g.traceparent for g in gates],
        )
        return {row["gate_id"] for row in rows}

    async def gate(self, conn: asyncpg.Connection, gate_id: str) -> asyncpg.Record | None:
        return await conn.fetchrow(f"SELECT * FROM {self._t('gates')} WHERE gate_id = $1", gate_id)  # noqa: S608

    async def close_gate(self, conn: asyncpg.Connection, gate_id: str, status: str, at: datetime) -> None:
        """Mark the gate closed and cancel its reminders and escalation."""
        await conn.execute(
            f"UPDATE {self._t('gates')} SET status = $2, closed_at = $3 WHERE gate_id = $1",  # noqa: S608
            gate_id,
            status,
            at,
        )
        await conn.execute(
            f"""UPDATE {self._t("schedule")} SET status = 'cancelled', done_at = $2
                WHERE gate_id = $1 AND status = 'pending'""",  # noqa: S608
            gate_id,
            at,
        )

    async def record_vote(self, conn: asyncpg.Connection, gate_id: str, vote: dict[str, Any]) -> list[Any]:
        """Set the approver's current vote on a pending gate (replacing their earlier one); returns the votes,
        in the order cast (empty when the gate is unknown or closed)."""
        row = await conn.fetchrow(
            f"""UPDATE {self._t("gates")} SET votes = (
                    SELECT coalesce(jsonb_agg(v), '[]'::jsonb) FROM jsonb_array_elements(votes) v
                    WHERE lower(v->>'approver') <> lower($2::jsonb->>'approver')) || jsonb_build_array($2::jsonb)
                WHERE gate_id = $1 AND status = 'pending' RETURNING votes""",  # noqa: S608
            gate_id,
            vote,
        )
        return list(row["votes"]) if row is not None else []

    # ------------------------------------------------------------------------------------------------ slack messages

    async def slack_message(self, conn: asyncpg.Connection, gate_id: str, channel: str) -> asyncpg.Record | None:
        """The bot-mode message posted for the gate on `channel` (`slack_channel`, `ts`, `updated_by`), if any."""
        return await conn.fetchrow(
            f"SELECT * FROM {self._t('slack_messages')} WHERE gate_id = $1 AND channel = $2",  # noqa: S608
            gate_id,
            channel,
        )

    async def lock_slack_message(self, conn: asyncpg.Connection, gate_id: str, channel: str) -> asyncpg.Record | None:
        """`slack_message`, locked until the transaction ends: replicas apply one gate's updates one at a time."""
        return await conn.fetchrow(
            f"SELECT * FROM {self._t('slack_messages')} WHERE gate_id = $1 AND channel = $2 FOR UPDATE",  # noqa: S608
            gate_id,
            channel,
        )

    async def remember_slack_message(
        self, conn: asyncpg.Connection, gate_id: str, channel: str, slack_channel: str, ts: str, at: datetime
    ) -> None:
        await conn.execute(
            f"""INSERT INTO {self._t("slack_messages")} (gate_id, channel, slack_channel, ts, posted_at)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",  # noqa: S608
            gate_id,
            channel,
            slack_channel,
            ts,
            at,
        )

    async def slack_message_updated(
        self, conn: asyncpg.Connection, gate_id: str, channel: str, delivery_id: int, at: datetime
    ) -> None:
        await conn.execute(
            f"""UPDATE {self._t("slack_messages")} SET updated_by = $3, updated_at = $4
                WHERE gate_id = $1 AND channel = $2""",  # noqa: S608
            gate_id,
            channel,
            delivery_id,
            at,
        )

    # ------------------------------------------------------------------------------------------------ schedule

    async def schedule_many(self, conn: asyncpg.Connection, items: Sequence[tuple[str, str, datetime]]) -> None:
        """Schedule (gate id, purpose, due) reminders / escalations of many gates in one statement (idempotent)."""
        if not items:
            return
        await conn.execute(
            f"""INSERT INTO {self._t("schedule")} (gate_id, purpose, due_at)
                SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING""",  # noqa: S608
            [gate_id for gate_id, _, _ in items],
            [purpose for _, purpose, _ in items],
            [due for _, _, due in items],
        )

    async def claim_due_schedule(self, conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
        """Due reminders / escalations of pending gates, locked (SKIP LOCKED: replicas share the work)."""
        return await conn.fetch(
            f"""SELECT s.gate_id, s.purpose, s.due_at, g.event_id, g.opened, g.traceparent
                FROM {self._t("schedule")} s JOIN {self._t("gates")} g USING (gate_id)
                WHERE s.status = 'pending' AND s.due_at <= $1 AND g.status = 'pending'
                ORDER BY s.due_at LIMIT $2
                FOR UPDATE OF s SKIP LOCKED""",  # noqa: S608
            now,
            limit,
        )

    async def schedule_done(self, conn: asyncpg.Connection, gate_id: str, purpose: str, at: datetime) -> None:
        await conn.execute(
            f"""UPDATE {self._t("schedule")} SET status = 'done', done_at = $3
                WHERE gate_id = $1 AND purpose = $2""",  # noqa: S608
            gate_id,
            purpose,
            at,
        )

    # ------------------------------------------------------------------------------------------------ deliveries

    async def insert_deliveries(self, conn: asyncpg.Connection, rows: Sequence[NewDelivery], now: datetime) -> int:
        """Insert deliveries (an idempotency key already present is skipped); wakes the dispatcher on commit."""
        if not rows:
            return 0
        inserted = await conn.fetch(
            f"""INSERT INTO {self._t("deliveries")} (idempotency_key, gate_id, event_id, kind, purpose, channel,
                    channel_type, recipient, max_attempts, next_attempt_at, content_type, subject, body, html,
                    headers, created_at, updated_at, traceparent)
                SELECT k, g, e, kd, p, c, ct, r, m, $15, cty, s, b, h, hd::jsonb, $15, $15, tp
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                            $8::text[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                            $16::text[])
                     AS t(k, g, e, kd, p, c, ct, r, m, cty, s, b, h, hd, tp)
                ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",  # noqa: S608
            [r.idempotency_key for r in rows],
            [r.gate_id for r in rows],
            [r.event_id for r in rows],
            [r.kind for r in rows],
            [r.purpose for r in rows],
            [r.channel for r in rows],
            [r.channel_type for r in rows],
            [r.recipient for r in rows],
            [r.max_attempts for r in rows],
            [r.content_type for r in rows],
            [r.subject for r in rows],
            [r.body for r in rows],
            [r.html for r in rows],
            [_headers_json(r.headers) for r in rows],
            now,
            [r.traceparent for r in rows],
        )
        if inserted:
            # Delivered to listeners only when the transaction commits: the dispatcher never sees uncommitted rows.
            await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
        return len(inserted)

    def _claim_sql(self) -> str:
        return f"""WITH due AS (
                    SELECT id FROM {self._t("deliveries")}
                    WHERE channel = $1 AND status IN ('pending', 'sending') AND next_attempt_at <= $2
                    ORDER BY next_attempt_at, id
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED)
                UPDATE {self._t("deliveries")} d
                SET status = 'sending', attempts = d.attempts + 1, next_attempt_at = $2 + $3::interval,
                    updated_at = $2
                FROM due WHERE d.id = due.id
                RETURNING d.*"""  # noqa: S608

    async def claim(
        self, conn: asyncpg.Connection, channel: str, now: datetime, lease: timedelta, limit: int
    ) -> list[asyncpg.Record]:
        """Claim up to `limit` due deliveries of `channel`: pending ones whose time came, and `sending` ones whose
        lease expired (their replica died mid-send). Claiming counts an attempt and leases the row until
        `now + lease`; SKIP LOCKED lets replicas claim side by side without waiting on each other."""
        return await conn.fetch(self._claim_sql(), channel, now, lease, limit)

    async def explain_claim(
        self, conn: asyncpg.Connection, channel: str, now: datetime, lease: timedelta, limit: int
    ) -> list[str]:
        """PostgreSQL's plan (EXPLAIN, not run) of a claim: an index scan in claim order, however many are due."""
        rows = await conn.fetch(f"EXPLAIN {self._claim_sql()}", channel, now, lease, limit)
        return [row[0] for row in rows]

    async def mark_many_sent(
        self, conn: asyncpg.Connection, tries: Sequence[tuple[int, int]], now: datetime
    ) -> set[int]:
        """Mark successful tries (delivery id, attempt) in one statement; returns the ids marked (a row re-claimed
        meanwhile, its lease having expired, is left to its new try)."""
        rows = await conn.fetch(
            f"""UPDATE {self._t("deliveries")} d
                SET status = 'sent', sent_at = $3, updated_at = $3, last_error = NULL
                FROM unnest($1::bigint[], $2::int[]) AS t(id, attempt)
                WHERE d.id = t.id AND d.attempts = t.attempt AND d.status = 'sending'
                RETURNING d.id""",  # noqa: S608
            [delivery_id for delivery_id, _ in tries],
            [attempt for _, attempt in tries],
            now,
        )
        return {row["id"] for row in rows}

    async def drop_unrouted(self, conn: asyncpg.Connection, channels: Sequence[str], now: datetime) -> int:
        """End the deliveries waiting for a channel no longer in the routing file (`dead`, last error
        `dropped: channel removed`): nothing would ever send them. A row another replica is sending right now
        (lease not over) is left to it. Returns how many."""
        result = await conn.execute(
            f"""UPDATE {self._t("deliveries")}
                SET status = 'dead', last_error = 'dropped: channel removed', updated_at = $2
                WHERE channel <> ALL($1::text[])
                  AND (status = 'pending' OR (status = 'sending' AND next_attempt_at <= $2))""",  # noqa: S608
            list(channels),
            now,
        )
        return int(result.split()[-1])

    async def mark_failed(
        self,
        conn: asyncpg.Connection,
        delivery_id: int,
        attempt: int,
        now: datetime,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a failed try: back to `pending` until `retry_at`, or `dead` when `retry_at` is None."""
        result = await conn.execute(
            f"""UPDATE {self._t("deliveries")}
                SET status = CASE WHEN $5::timestamptz IS NULL THEN 'dead' ELSE 'pending' END,
                    next_attempt_at = COALESCE($5::timestamptz, next_attempt_at),
                    last_error = $4, updated_at = $3
                WHERE id = $1 AND attempts = $2 AND status = 'sending'""",  # noqa: S608
            delivery_id,
            attempt,
            now,
            error[:2000],
            retry_at,
        )
        return result.endswith(" 1")

    async def release(self, conn: asyncpg.Connection, delivery_id: int, attempt: int, now: datetime) -> None:
        """Give back a claimed delivery whose send was interrupted by a shutdown: due at once, the try not
        counted (the sink may have received it; the idempotency key lets it dedupe)."""
        await conn.execute(
            f"""UPDATE {self._t("deliveries")}
                SET status = 'pending', attempts = attempts - 1, next_attempt_at = $3, updated_at = $3
                WHERE id = $1 AND attempts = $2 AND status = 'sending'""",  # noqa: S608
            delivery_id,
            attempt,
            now,
        )

    async def deliveries(self, conn: asyncpg.Connection, gate_id: str | None = None) -> list[asyncpg.Record]:
        """Deliveries (without their bodies), oldest first, optionally of one gate."""
        return await conn.fetch(
            f"""SELECT id, gate_id, event_id, kind, purpose, channel, channel_type, recipient, status, attempts,
                       max_attempts, next_attempt_at, last_error, created_at, updated_at, sent_at, idempotency_key
                FROM {self._t("deliveries")}
                WHERE $1::text IS NULL OR gate_id = $1
                ORDER BY id""",  # noqa: S608
            gate_id,
        )

    async def backlog(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """Deliveries not finished, per channel."""
        return await conn.fetch(
            f"""SELECT channel, count(*) AS n FROM {self._t("deliveries")}
                WHERE status IN ('pending', 'sending') GROUP BY channel"""  # noqa: S608
        )


def _headers_json(headers: Sequence[tuple[str, str]]) -> str:
    return json.dumps([[name, value] for name, value in headers])
