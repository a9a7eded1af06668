"""All SQL of the approval service. Functions take the connection of the caller's transaction."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from signoff.approval.mapping import StoredGate, gate_from_row

SCHEMA = "approval"
# What rebuilds a gate aggregate for a command (a decision, a cancel, an expiry): its own columns, not the request
# document (which would be read, detoasted and validated for every decision).
_AGGREGATE_COLUMNS = """id, pipeline_id, execution_id, stage_id, step_id, attempt, status, token, policy, inputs,
    pipeline_executor, members_by_group, opened_at, expires_at, closed_at, timeout_action, environment_type,
    traceparent"""
_GATE_COLUMNS = f"""{_AGGREGATE_COLUMNS}, request, pipeline_name, stage_name, step_name, environments"""
# A gate as a list shows it: no request document, no directory.
_SUMMARY_COLUMNS = """id, pipeline_id, execution_id, stage_id, step_id, attempt, status, policy, pipeline_executor,
    opened_at, expires_at, closed_at, pipeline_name, stage_name, step_name, environments"""


@dataclass(frozen=True)
class NewGate:
    """A gate row to insert. `policy`, `inputs`, `members_by_group` and `request` are JSON text (serialised by
    the caller's models directly, without an intermediate dict). `policy` and `inputs` are what the gate is rebuilt
    from; `request` is the document as the api shows it."""

    id: str
    pipeline_id: str
    execution_id: str
    stage_id: str
    step_id: str
    attempt: int
    token: str
    policy: str
    inputs: str
    pipeline_executor: str | None
    members_by_group: str
    opened_at: datetime
    expires_at: datetime
    timeout_action: str
    request: str
    pipeline_name: str = ""
    stage_name: str = ""
    step_name: str = ""
    environments: tuple[str, ...] = ()
    traceparent: str | None = None
    """The trace of the run, continued by what the gate publishes later (sql/0005_trace_context.sql)."""
    environment_type: str = "none"
    """The `environment_type` metrics label of the gate's stage (sql/0006_gate_environment_type.sql)."""


@dataclass(frozen=True)
class NewVote:
    gate_id: str
    decision_id: str
    source: str
    approver: str
    status: str
    comment: str
    inputs: Mapping[str, str]
    decided_at: datetime
    at: datetime


@dataclass(frozen=True)
class SeenDecision:
    """A decision id whose signature checked out, remembered whatever becomes of it (a replay is never a vote)."""

    decision_id: str
    source: str
    gate_id: str | None
    at: datetime


@dataclass(frozen=True)
class AuditRow:
    gate_id: str | None
    kind: str
    at: datetime
    decision_id: str | None = None
    actor: str | None = None
    reason: str | None = None
    detail: Mapping[str, Any] | None = None


class ApprovalRepository:
    """The approval schema's tables."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.schema = schema
        # The two lookups every decision makes (also explained by `explain_decision_lookups`).
        self._gate_by_id_sql = f"SELECT {_AGGREGATE_COLUMNS} FROM {self._t('gates')} WHERE id = $1 FOR UPDATE"  # noqa: S608
        self._pending_by_action_sql = f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")}
            WHERE token = $4 AND pipeline_id = $1 AND stage_id = $2 AND step_id = $3 AND status = 'pending'
            FOR UPDATE"""  # noqa: S608

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # ------------------------------------------------------------------------------------------------ gates

    async def insert_gates(self, conn: asyncpg.Connection, gates: Sequence[NewGate]) -> list[str]:
        """Insert `gates` in one statement; returns the ids actually inserted (a natural key already present is
        skipped: a repeated request is the same gate)."""
        if not gates:
            return []
        rows = await conn.fetch(
            f"""INSERT INTO {self._t("gates")} (id, pipeline_id, execution_id, stage_id, step_id, attempt, token,
                    policy, inputs, pipeline_executor, members_by_group, opened_at, expires_at, timeout_action,
                    request, pipeline_name, stage_name, step_name, environments, traceparent, environment_type)
                SELECT id, pipeline_id, execution_id, stage_id, step_id, attempt, token, policy::jsonb,
                    inputs::jsonb, pipeline_executor, members_by_group::jsonb, opened_at, expires_at,
                    timeout_action, request::jsonb, pipeline_name, stage_name, step_name,
                    string_to_array(environments, E'\\x1f'), traceparent, environment_type
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                    $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[],
                    $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                    $21::text[])
                    AS g(id, pipeline_id, execution_id, stage_id, step_id, attempt, token, policy, inputs,
                         pipeline_executor, members_by_group, opened_at, expires_at, timeout_action, request,
                         pipeline_name, stage_name, step_name, environments, traceparent, environment_type)
                ON CONFLICT ON CONSTRAINT gates_natural_key DO NOTHING
                RETURNING id""",  # noqa: S608
            [g.id for g in gates],
            [g.pipeline_id for g in gates],
            [g.execution_id for g in gates],
            [g.stage_id for g in gates],
            [g.step_id for g in gates],
            [g.attempt for g in gates],
            [g.token for g in gates],
            # As JSON text: a list value inside a jsonb[] parameter would be read as another array dimension.
            [g.policy for g in gates],
            [g.inputs for g in gates],
            [g.pipeline_executor for g in gates],
            [g.members_by_group for g in gates],
            [g.opened_at for g in gates],
            [g.expires_at for g in gates],
            [g.timeout_action for g in gates],
            [g.request for g in gates],
            [g.pipeline_name for g in gates],
            [g.stage_name for g in gates],
            [g.step_name for g in gates],
            # A text[] per gate inside a text[][] parameter would need equal lengths: joined by the unit separator.
            ["\x1f".join(g.environments) for g in gates],
            [g.traceparent for g in gates],
            [g.environment_type for g in gates],
        )
        return [row["id"] for row in rows]

    async def insert_gate_approvers(
        self, conn: asyncpg.Connection, approvers: Sequence[tuple[str, str, datetime]]
    ) -> None:
        """Record who may decide newly opened gates: (gate id, user key, opened at) rows, in one statement."""
        if not approvers:
            return
        await conn.execute(
            f"""INSERT INTO {self._t("gate_approvers")} (gate_id, user_key, opened_at)
                SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                ON CONFLICT DO NOTHING""",  # noqa: S608
            [gate_id for gate_id, _, _ in approvers],
            [user for _, user, _ in approvers],
            [opened_at for _, _, opened_at in approvers],
        )

    async def _aggregates(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[StoredGate]:
        """The gate aggregates of `rows`, each with its votes (one query for all)."""
        if not rows:
            return []
        votes: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for vote in await self.votes_of(conn, [row["id"] for row in rows]):
            votes[vote["gate_id"]].append(vote)
        return [gate_from_row(row, votes[row["id"]]) for row in rows]

    async def _aggregate(self, conn: asyncpg.Connection, row: asyncpg.Record | None) -> StoredGate | None:
        return (await self._aggregates(conn, [row]))[0] if row is not None else None

    async def gate_by_id(self, conn: asyncpg.Connection, gate_id: str) -> StoredGate | None:
        """The gate `gate_id` with its votes, locked for this transaction."""
        return await self._aggregate(conn, await conn.fetchrow(self._gate_by_id_sql, gate_id))

    async def gates_by_ids(self, conn: asyncpg.Connection, gate_ids: Sequence[str]) -> list[StoredGate]:
        """The gates among `gate_ids` that exist, with their votes, locked for this transaction (in id order, so two
        transactions locking overlapping sets queue instead of deadlocking): two statements however many."""
        rows = await conn.fetch(
            f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")} WHERE id = ANY($1::text[])
                ORDER BY id FOR UPDATE""",  # noqa: S608
            sorted(gate_ids),
        )
        return await self._aggregates(conn, rows)

    async def gate_by_key(
        self, conn: asyncpg.Connection, pipeline_id: str, execution_id: str, stage_id: str, step_id: str, attempt: int
    ) -> StoredGate | None:
        """The gate with this natural key and its votes, locked."""
        row = await conn.fetchrow(
            f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")}
                WHERE pipeline_id = $1 AND execution_id = $2 AND stage_id = $3 AND step_id = $4 AND attempt = $5
                FOR UPDATE""",  # noqa: S608
            pipeline_id,
            execution_id,
            stage_id,
            step_id,
            attempt,
        )
        return await self._aggregate(conn, row)

    async def gate_by_action(
        self, conn: asyncpg.Connection, pipeline_id: str, stage_id: str, step_id: str, token: str
    ) -> StoredGate | None:
        """CodePipeline-style lookup: the pending gate of this pipeline / stage / action holding `token`; else the
        most recently opened gate of that action (so a stale token or a closed gate is refused for what it is);
        with its votes, locked."""
        row = await conn.fetchrow(self._pending_by_action_sql, pipeline_id, stage_id, step_id, token)
        if row is None:
            row = await conn.fetchrow(
                f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")}
                    WHERE pipeline_id = $1 AND stage_id = $2 AND step_id = $3
                    ORDER BY (status = 'pending') DESC, opened_at DESC LIMIT 1
                    FOR UPDATE""",  # noqa: S608
                pipeline_id,
                stage_id,
                step_id,
            )
        return await self._aggregate(conn, row)

    async def explain_decision_lookups(
        self, conn: asyncpg.Connection, gate_id: str, pipeline_id: str, stage_id: str, step_id: str, token: str
    ) -> dict[str, str]:
        """The PostgreSQL plans of the gate lookups a decision makes (by id; by pipeline / stage / action and
        token), for the benchmark's proof that a decision's cost does not grow with the number of pending gates."""
        plans = {}
        for name, sql, args in (
            ("by gate id", self._gate_by_id_sql, (gate_id,)),
            ("by pipeline/stage/action", self._pending_by_action_sql, (pipeline_id, stage_id, step_id, token)),
        ):
            rows = await conn.fetch(f"EXPLAIN (COSTS OFF) {sql}", *args)
            plans[name] = "\n".join(row[0] for row in rows)
        return plans

    async def pending_of_step(
        self,
        conn: asyncpg.Connection,
        pipeline_id: str,
        stage_id: str,
        step_id: str,
        excluding: Sequence[str],
        opened_before: datetime,
    ) -> list[StoredGate]:
        """Older pending gates of the same pipeline step (for auto-reject of previous approvals), with their votes,
        locked. One another transaction holds is skipped: it is being decided (or superseded) right now, and
        waiting for it could deadlock with that transaction's own auto-reject."""
        rows = await conn.fetch(
            f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")}
                WHERE pipeline_id = $1 AND stage_id = $2 AND step_id = $3 AND status = 'pending'
                  AND NOT (id = ANY($4::text[])) AND opened_at <= $5
                ORDER BY id FOR UPDATE SKIP LOCKED""",  # noqa: S608
            pipeline_id,
            stage_id,
            step_id,
            list(excluding),
            opened_before,
        )
        return await self._aggregates(conn, rows)

    async def auto_rejects_previous(self, conn: asyncpg.Connection, gate_id: str) -> bool:
        """Whether the request of `gate_id` asked to reject older runs of its step once it is approved."""
        return bool(
            await conn.fetchval(
                f"""SELECT coalesce((request ->> 'auto_reject_previous_approvals')::boolean, false)
                    FROM {self._t("gates")} WHERE id = $1""",  # noqa: S608
                gate_id,
            )
        )

    async def claim_due(self, conn: asyncpg.Connection, now: datetime, limit: int) -> list[StoredGate]:
        """Pending gates whose deadline passed, with their votes, locked; rows another replica holds are skipped."""
        rows = await conn.fetch(
            f"""SELECT {_AGGREGATE_COLUMNS} FROM {self._t("gates")}
                WHERE status = 'pending' AND expires_at <= $1
                ORDER BY expires_at LIMIT $2
                FOR UPDATE SKIP LOCKED""",  # noqa: S608
            now,
            limit,
        )
        return await self._aggregates(conn, rows)

    async def pending_counts(self, conn: asyncpg.Connection, due_by: datetime) -> tuple[int, int]:
        """(pending gates, pending gates due by `due_by`): one index scan of the pending gates only (by
        `gates_status_opened`), however many closed gates the table holds: 35-55 ms for 10k pending among 1M gates
        on the dev PostgreSQL (EXPLAIN ANALYZE)."""
        row = await conn.fetchrow(
            f"""SELECT count(*) AS pending, count(*) FILTER (WHERE expires_at <= $1) AS due
                FROM {self._t("gates")} WHERE status = 'pending'""",  # noqa: S608
            due_by,
        )
        assert row is not None
        return row["pending"], row["due"]

    async def close_gates(self, conn: asyncpg.Connection, closed: Sequence[tuple[str, str, datetime]]) -> None:
        """Store gates' final status, (gate id, status, closed at) rows, and forget who may decide them (nobody
        decides a closed gate: it leaves everyone's "mine" list), in one statement."""
        if not closed:
            return
        await conn.execute(
            f"""WITH closed AS (
                    UPDATE {self._t("gates")} AS g SET status = c.status, closed_at = c.closed_at
                    FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS c(id, status, closed_at)
                    WHERE g.id = c.id
                    RETURNING g.id)
                DELETE FROM {self._t("gate_approvers")} WHERE gate_id IN (SELECT id FROM closed)""",  # noqa: S608
            [gate_id for gate_id, _, _ in closed],
            [status for _, status, _ in closed],
            [closed_at for _, _, closed_at in closed],
        )

    # ------------------------------------------------------------------------------------------------ reads (CLI)

    async def find_gate(self, conn: asyncpg.Connection, gate_id: str) -> asyncpg.Record | None:
        """The gate `gate_id`, without a lock (read-only callers such as `signoff show`)."""
        return await conn.fetchrow(
            f"SELECT {_GATE_COLUMNS} FROM {self._t('gates')} WHERE id = $1",  # noqa: S608
            gate_id,
        )

    async def list_gates(
        self,
        conn: asyncpg.Connection,
        *,
        status: str | None,
        group: str | None,
        pipeline: str | None,
        limit: int,
        before: tuple[datetime, str] | None = None,
    ) -> list[asyncpg.Record]:
        """Gates newest first, filtered by status, user group (in the resolved directory) and pipeline; `before`
        (opened at, id) continues a page (keyset pagination)."""
        return await conn.fetch(
            f"""SELECT {_SUMMARY_COLUMNS} FROM {self._t("gates")}
                WHERE ($1::text IS NULL OR status = $1)
                  AND ($2::text IS NULL OR members_by_group ? $2)
                  AND ($3::text IS NULL OR pipeline_id = $3)
                  AND ($5::timestamptz IS NULL OR (opened_at, id) < ($5, $6))
                ORDER BY opened_at DESC, id DESC
                LIMIT $4""",  # noqa: S608
            status,
            group,
            pipeline,
            limit,
            before[0] if before else None,
            before[1] if before else None,
        )

    def _decidable_sql(self) -> str:
        return f"""SELECT {", ".join(f"g.{c.strip()}" for c in _SUMMARY_COLUMNS.split(","))}
            FROM {self._t("gate_approvers")} a JOIN {self._t("gates")} g ON g.id = a.gate_id
            WHERE a.user_key = $1 AND g.status = 'pending'
              AND ($3::timestamptz IS NULL OR (a.opened_at, a.gate_id) < ($3, $4))
              AND ($5::text IS NULL OR g.pipeline_id = $5)
              AND ($6::text IS NULL OR g.members_by_group ? $6)
            ORDER BY a.opened_at DESC, a.gate_id DESC
            LIMIT $2"""  # noqa: S608

    async def decidable_by(
        self,
        conn: asyncpg.Connection,
        user_key: str,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
        pipeline: str | None = None,
        group: str | None = None,
    ) -> list[asyncpg.Record]:
        """Pending gates `user_key` may decide, newest first (one index range scan of gate_approvers), of
        `pipeline` and of user `group` (in the resolved directory, as `list_gates`) when given: filtered before the
        limit, so a page is full whenever more gates match."""
        return await conn.fetch(
            self._decidable_sql(),
            user_key,
            limit,
            before[0] if before else None,
            before[1] if before else None,
            pipeline,
            group,
        )

    async def explain_decidable_by(self, conn: asyncpg.Connection, user_key: str, limit: int) -> str:
        """The query plan of `decidable_by` (the benchmark prints it)."""
        rows = await conn.fetch(f"EXPLAIN {self._decidable_sql()}", user_key, limit, None, None, None, None)
        return "\n".join(row[0] for row in rows)

    async def find_gate_by_token(
        self, conn: asyncpg.Connection, pipeline_id: str, stage_id: str, step_id: str, token: str
    ) -> asyncpg.Record | None:
        """The gate of that pipeline / stage / step whose token is `token`, whatever its status, without a lock
        (CodePipeline-style callers name a gate so)."""
        return await conn.fetchrow(
            f"""SELECT {_GATE_COLUMNS} FROM {self._t("gates")}
                WHERE token = $4 AND pipeline_id = $1 AND stage_id = $2 AND step_id = $3""",  # noqa: S608
            pipeline_id,
            stage_id,
            step_id,
            token,
        )

    async def latest_gate_of_step(
        self, conn: asyncpg.Connection, pipeline_id: str, stage_id: str, step_id: str
    ) -> asyncpg.Record | None:
        """The most recently opened gate of that pipeline / stage / step, whatever its status and token."""
        return await conn.fetchrow(
            f"""SELECT {_GATE_COLUMNS} FROM {self._t("gates")}
                WHERE pipeline_id = $1 AND stage_id = $2 AND step_id = $3
                ORDER BY opened_at DESC, id DESC LIMIT 1""",  # noqa: S608
            pipeline_id,
            stage_id,
            step_id,
        )

    async def gates_of_execution(self, conn: asyncpg.Connection, execution_id: str) -> list[asyncpg.Record]:
        """Every gate of one execution, oldest first."""
        return await conn.fetch(
            f"""SELECT {_GATE_COLUMNS} FROM {self._t("gates")} WHERE execution_id = $1
                ORDER BY opened_at, id""",  # noqa: S608
            execution_id,
        )

    async def gate_status(self, conn: asyncpg.Connection, gate_id: str) -> str | None:
        return await conn.fetchval(f"SELECT status FROM {self._t('gates')} WHERE id = $1", gate_id)  # noqa: S608

    async def audit_of_gate(self, conn: asyncpg.Connection, gate_id: str) -> list[asyncpg.Record]:
        """The audit trail of one gate, oldest first."""
        return await conn.fetch(
            f"""SELECT seq, gate_id, kind, decision_id, actor, reason, detail, at FROM {self._t("audit")}
                WHERE gate_id = $1 ORDER BY seq""",  # noqa: S608
            gate_id,
        )

    async def audit_of_decision(self, conn: asyncpg.Connection, decision_id: str) -> list[asyncpg.Record]:
        """The audit rows naming decision `decision_id` (its vote or its refusal), oldest first."""
        return await conn.fetch(
            f"""SELECT seq, gate_id, kind, decision_id, actor, reason, detail, at FROM {self._t("audit")}
                WHERE decision_id = $1 ORDER BY seq""",  # noqa: S608
            decision_id,
        )

    # ------------------------------------------------------------------------------------------------ votes

    async def votes_of(self, conn: asyncpg.Connection, gate_ids: Sequence[str]) -> list[asyncpg.Record]:
        """Every accepted vote of these gates, oldest first."""
        return await conn.fetch(
            f"""SELECT gate_id, decision_id, source, approver, status, comment, inputs, decided_at, at
                FROM {self._t("votes")} WHERE gate_id = ANY($1::text[]) ORDER BY seq""",  # noqa: S608
            list(gate_ids),
        )

    async def decisions_seen(self, conn: asyncpg.Connection, decision_ids: Sequence[str]) -> dict[str, str | None]:
        """The decision ids among `decision_ids` seen before, each with the gate it was about (one statement)."""
        if not decision_ids:
            return {}
        rows = await conn.fetch(
            f"""SELECT decision_id, gate_id FROM {self._t("decisions_seen")}
                WHERE decision_id = ANY($1::text[])""",  # noqa: S608
            list(decision_ids),
        )
        return {row["decision_id"]: row["gate_id"] for row in rows}

    async def remember_decision(
        self, conn: asyncpg.Connection, decision_id: str, source: str, gate_id: str | None, at: datetime
    ) -> tuple[bool, str | None]:
        """Remember one decision id as seen now. Returns (first time, gate id): False and the gate it was about when
        the id was seen before (a replay, whatever happened to it then; one that another transaction is
        remembering is waited for)."""
        row = await conn.fetchrow(
            f"""INSERT INTO {self._t("decisions_seen")} AS seen (decision_id, source, gate_id, seen_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (decision_id) DO UPDATE SET decision_id = seen.decision_id
                RETURNING (xmax = 0) AS inserted, gate_id""",  # noqa: S608
            decision_id,
            source,
            gate_id,
            at,
        )
        return bool(row["inserted"]), row["gate_id"]

    async def remember_decisions(self, conn: asyncpg.Connection, decisions: Sequence[SeenDecision]) -> None:
        """Remember decision ids as seen, in one statement. The caller checked them with `decisions_seen` in this
        transaction; one that another transaction remembered since (a replay racing the original on another
        partition) raises SerializationError, retried by the consumer loop, whose retry refuses it as a
        duplicate."""
        if not decisions:
            return
        inserted = await conn.fetch(
            f"""INSERT INTO {self._t("decisions_seen")} (decision_id, source, gate_id, seen_at)
                SELECT decision_id, source, gate_id, seen_at
                FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                    AS d(decision_id, source, gate_id, seen_at)
                ON CONFLICT (decision_id) DO NOTHING
                RETURNING decision_id""",  # noqa: S608
            [d.decision_id for d in decisions],
            [d.source for d in decisions],
            [d.gate_id for d in decisions],
            [d.at for d in decisions],
        )
        if len(inserted) < len(decisions):
            raced = sorted({d.decision_id for d in decisions} - {row["decision_id"] for row in inserted})
            raise asyncpg.exceptions.SerializationError(f"decisions {', '.join(raced)} remembered concurrently")

    async def record_votes(self, conn: asyncpg.Connection, votes: Sequence[NewVote], replaced: Sequence[str]) -> None:
        """Insert `votes` in their order and mark the votes `replaced` (by decision id: an approver changed them;
        those of `votes` among them too), in one statement."""
        if not votes and not replaced:
            return
        gone = set(replaced)
        try:
            # Both parts see the votes as they were before the statement: a vote replaced in the same batch is
            # inserted already marked, the UPDATE marks those of earlier transactions.
            await conn.execute(
                f"""WITH inserted AS (
                        INSERT INTO {self._t("votes")}
                            (gate_id, decision_id, source, approver, status, comment, inputs, decided_at, at, replaced)
                        SELECT gate_id, decision_id, source, approver, status, comment, inputs::jsonb, decided_at, at,
                            replaced
                        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                            $7::text[], $8::timestamptz[], $9::timestamptz[], $10::boolean[]) WITH ORDINALITY
                            AS v(gate_id, decision_id, source, approver, status, comment, inputs, decided_at, at,
                                 replaced, n)
                        ORDER BY n
                        RETURNING 1)
                    UPDATE {self._t("votes")} SET replaced = true WHERE decision_id = ANY($11::text[])""",  # noqa: S608
                [v.gate_id for v in votes],
                [v.decision_id for v in votes],
                [v.source for v in votes],
                [v.approver for v in votes],
                [v.status for v in votes],
                [v.comment for v in votes],
                [json.dumps(dict(v.inputs)) for v in votes],
                [v.decided_at for v in votes],
                [v.at for v in votes],
                [v.decision_id in gone for v in votes],
                sorted(gone - {v.decision_id for v in votes}),
            )
        except asyncpg.UniqueViolationError as exc:
            # Another transaction recorded one of these decision ids after our check (a replay racing the original
            # on another partition). Retried as transient: the retry sees that vote and refuses this one.
            raise asyncpg.exceptions.SerializationError(f"a vote recorded concurrently: {exc.detail}") from exc

    # ------------------------------------------------------------------------------------------------ audit

    async def audit(self, conn: asyncpg.Connection, rows: Sequence[AuditRow]) -> None:
        """Append audit rows (set-based)."""
        if not rows:
            return
        await conn.execute(
            f"""INSERT INTO {self._t("audit")} (gate_id, kind, decision_id, actor, reason, detail, at)
                SELECT gate_id, kind, decision_id, actor, reason, detail::jsonb, at
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::timestamptz[]) AS a(gate_id, kind, decision_id, actor, reason, detail, at)""",  # noqa: S608
            [r.gate_id for r in rows],
            [r.kind for r in rows],
            [r.decision_id for r in rows],
            [r.actor for r in rows],
            [r.reason for r in rows],
            [json.dumps(dict(r.detail or {})) for r in rows],
            [r.at for r in rows],
        )

    # ------------------------------------------------------------------------------------------------ directory

    async def has_directory(self, conn: asyncpg.Connection) -> bool:
        """Whether the directory holds anyone (empty on a fresh install, before a directory file or `groups load`)."""
        return bool(
            await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self._t('directory_members')})")  # noqa: S608
        )

    async def members_of(self, conn: asyncpg.Connection, groups: Iterable[str]) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"""SELECT group_name, user_id, email, chat_handles FROM {self._t("directory_members")}
                WHERE group_name = ANY($1::text[]) ORDER BY group_name, user_id""",  # noqa: S608
            sorted(set(groups)),
        )

    async def email_of(self, conn: asyncpg.Connection, user: str) -> str | None:
        """The e-mail the directory lists for `user` (compared as `user_key` does), or None."""
        return await conn.fetchval(
            f"""SELECT email FROM {self._t("directory_members")}
                WHERE lower(btrim(user_id)) = $1 AND email IS NOT NULL ORDER BY group_name LIMIT 1""",  # noqa: S608
            user.strip().lower(),
        )

    async def known_users(self, conn: asyncpg.Connection, users: Iterable[str]) -> list[str]:
        """The user ids of the directory among `users`, compared case-insensitively (the domain's `user_key`
        decides exactly; this only narrows the rows)."""
        wanted = sorted({user.strip().lower() for user in users})
        if not wanted:
            return []
        return [
            row["user_id"]
            for row in await conn.fetch(
                f"""SELECT DISTINCT user_id FROM {self._t("directory_members")}
                    WHERE lower(btrim(user_id)) = ANY($1::text[])""",  # noqa: S608
                wanted,
            )
        ]

    async def groups_of_user(self, conn: asyncpg.Connection, user_id: str) -> list[str]:
        """The user groups `user_id` is a member of (empty: the directory does not know the user)."""
        rows = await conn.fetch(
            f"""SELECT group_name FROM {self._t("directory_members")} WHERE user_id = $1
                ORDER BY group_name""",  # noqa: S608
            user_id,
        )
        return [row["group_name"] for row in rows]

    async def users_of_slack_id(self, conn: asyncpg.Connection, slack_id: str) -> list[str]:
        """The directory users whose `slack` handle is `slack_id` (one, unless the directory maps it twice)."""
        rows = await conn.fetch(
            f"""SELECT DISTINCT user_id FROM {self._t("directory_members")}
                WHERE chat_handles->>'slack' = $1 ORDER BY user_id""",  # noqa: S608
            slack_id,
        )
        return [row["user_id"] for row in rows]

    async def directory_users(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """Every user of the directory (`user_id`, `groups`), by user id."""
        return await conn.fetch(
            f"""SELECT user_id, array_agg(group_name ORDER BY group_name) AS groups
                FROM {self._t("directory_members")} GROUP BY user_id ORDER BY user_id"""  # noqa: S608
        )

    async def directory_groups(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """Every user group of the directory with its member count."""
        return await conn.fetch(
            f"""SELECT group_name, count(*) AS members FROM {self._t("directory_members")}
                GROUP BY group_name ORDER BY group_name"""  # noqa: S608
        )

    async def replace_directory(
        self, conn: asyncpg.Connection, members: Sequence[tuple[str, str, str | None, Mapping[str, str]]]
    ) -> None:
        """Replace the whole directory with `members` (group, user id, e-mail, chat handles)."""
        await conn.execute(f"DELETE FROM {self._t('directory_members')}")  # noqa: S608
        await self.upsert_members(conn, members)

    async def load_directory_file(
        self, conn: asyncpg.Connection, members: Sequence[tuple[str, str, str | None, Mapping[str, str]]]
    ) -> bool:
        """Replace the directory with the directory file's `members` unless this very content was the last file
        loaded (then the database, with whatever `groups load` changed since, is kept). Returns whether it loaded.
        Replicas starting together serialise on a transaction-scoped advisory lock."""
        canonical = json.dumps(sorted([m[0], m[1], m[2], sorted(dict(m[3]).items())] for m in members))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.schema}.directory_source")
            last = await conn.fetchval(f"SELECT digest FROM {self._t('directory_source')}")  # noqa: S608
            if last == digest:
                return False
            await self.replace_directory(conn, members)
            await conn.execute(
                f"""INSERT INTO {self._t("directory_source")} (singleton, digest, loaded_at) VALUES (true, $1, now())
                    ON CONFLICT (singleton) DO UPDATE SET digest = EXCLUDED.digest, loaded_at = EXCLUDED.loaded_at""",  # noqa: S608
                digest,
            )
            return True

    async def upsert_members(
        self, conn: asyncpg.Connection, members: Sequence[tuple[str, str, str | None, Mapping[str, str]]]
    ) -> None:
        if not members:
            return
        await conn.execute(
            f"""INSERT INTO {self._t("directory_members")} (group_name, user_id, email, chat_handles)
                SELECT g, u, e, c::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS m(g, u, e, c)
                ON CONFLICT (group_name, user_id)
                DO UPDATE SET email = EXCLUDED.email, chat_handles = EXCLUDED.chat_handles""",  # noqa: S608
            [m[0] for m in members],
            [m[1] for m in members],
            [m[2] for m in members],
            [json.dumps(dict(m[3])) for m in members],
        )
