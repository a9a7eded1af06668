"""All SQL of the executor service. Functions take the connection of the caller's transaction.

An execution comes back as its aggregate (`Loaded`: the `Execution` with its pipeline and plan, and what it looked
like when loaded): the pipeline document it started with is parsed and planned once per definition (`Definitions`,
by document hash), not on every load. Saving it back (`save`) writes the new state and, through the caller's outbox,
the `ExecutionStepChanged` of every step it moved: the handler and the runner only load, call the domain, save.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.executor.domain.definitions import Definitions
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.state import ExecutionStatus, StepStatus
from signoff.executor.mapping import outbox_record, step_changed
from signoff.executor.scripts import ScriptProcess
from signoff.runtime.outbox import OutboxWriter
from signoff.runtime.tracing import current_traceparent

SCHEMA = "executor"
_EXECUTION_COLUMNS = """id, pipeline_id, pipeline_name, sequence_id, status, reason, triggered_by, state, runnable,
    wake_at, owner, lease_until, started_at, finished_at, updated_at, traceparent"""


def runner_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes the runner when an execution became runnable."""
    return f"signoff_runner_{schema}"


@dataclass(frozen=True)
class NewExecution:
    """An execution row to insert."""

    id: str
    pipeline_id: str
    pipeline_name: str
    sequence_id: int
    status: str
    triggered_by: Any
    state: Any
    started_at: datetime
    traceparent: str | None = None
    """The trace the execution's later events continue (see sql/0003_trace_context.sql)."""


@dataclass(frozen=True)
class SavedExecution:
    """What changes when an execution is saved. `owner` is only written when `set_owner` (the runner decides who
    runs its scripts; handlers and reports leave it alone)."""

    id: str
    status: str
    reason: str | None
    state: Any
    finished_at: datetime | None
    runnable: bool
    wake_at: datetime | None
    set_owner: bool = False
    owner: str | None = None
    lease_seconds: float = 0.0


@dataclass
class Loaded:
    """An execution loaded (and locked) from its row: the aggregate, with what it looked like then (the step
    changes a save publishes are the differences from `before`)."""

    row: Mapping[str, Any]
    execution: Execution
    before: dict[str, tuple[StepStatus, int]] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        """The trace of the run (what started it), stored with the execution."""
        return self.row.get("traceparent")

    @property
    def triggered_by(self) -> wire.Person:
        """Who started the execution, as the wire contract knows them."""
        return wire.Person.model_validate(self.row["triggered_by"])


class ExecutorRepository:
    """The executor schema's tables. `catalog`: what restored executions resolve their stage metadata against;
    `definitions`: the parsed pipelines and plans shared by every load (the consumer's and the runner's)."""

    def __init__(
        self, schema: str = SCHEMA, *, catalog: Catalog | None = None, definitions: Definitions | None = None
    ) -> None:
        self.schema = schema
        self.catalog = catalog
        self.definitions = definitions if definitions is not None else Definitions()

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # ------------------------------------------------------------------------------------------------ pipelines

    async def pipeline_yaml(self, conn: asyncpg.Connection, identifier: str) -> str | None:
        """The definition pipeline `identifier` was last run with."""
        return await conn.fetchval(f"SELECT yaml FROM {self._t('pipelines')} WHERE identifier = $1", identifier)  # noqa: S608

    async def save_pipeline(
        self, conn: asyncpg.Connection, identifier: str, name: str, yaml: str, at: datetime
    ) -> None:
        """Keep `yaml` as the current definition of pipeline `identifier`."""
        await conn.execute(
            f"""INSERT INTO {self._t("pipelines")} (identifier, name, yaml, updated_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (identifier) DO UPDATE SET name = $2, yaml = $3, updated_at = $4""",  # noqa: S608
            identifier,
            name,
            yaml,
            at,
        )

    async def next_sequence(self, conn: asyncpg.Connection, identifier: str) -> int:
        """The next execution number of a pipeline (1, 2, …); the row lock serialises concurrent starts."""
        return await conn.fetchval(
            f"""UPDATE {self._t("pipelines")} SET last_sequence = last_sequence + 1 WHERE identifier = $1
                RETURNING last_sequence""",  # noqa: S608
            identifier,
        )

    # ------------------------------------------------------------------------------------------------ executions

    async def insert_execution(self, conn: asyncpg.Connection, row: NewExecution) -> bool:
        """Insert a new execution (runnable at once); False when the id exists (a repeated request)."""
        inserted = await conn.fetchval(
            f"""INSERT INTO {self._t("executions")}
                    (id, pipeline_id, pipeline_name, sequence_id, status, triggered_by, state, started_at, runnable,
                     traceparent)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true, $9)
                ON CONFLICT (id) DO NOTHING RETURNING true""",  # noqa: S608
            row.id,
            row.pipeline_id,
            row.pipeline_name,
            row.sequence_id,
            row.status,
            row.triggered_by,
            row.state,
            row.started_at,
            row.traceparent,
        )
        return bool(inserted)

    async def execution_exists(self, conn: asyncpg.Connection, execution_id: str) -> bool:
        """Whether an execution with this id was started (a repeated request is the same execution)."""
        return bool(
            await conn.fetchval(f"SELECT true FROM {self._t('executions')} WHERE id = $1", execution_id)  # noqa: S608
        )

    def restore(self, row: Mapping[str, Any]) -> Loaded:
        """The aggregate of an execution row (a claimed one): its pipeline without catalog checks (a catalog edited
        since the start must not strand a running execution), parsed once per definition. Raises when the stored
        state or document is not valid (the runner fails such an execution)."""
        execution = Execution.from_dict(row["state"], catalog=self.catalog, definitions=self.definitions)
        return Loaded(row, execution, {s.path: (s.status, s.attempt) for s in execution.steps()})

    async def lock(self, conn: asyncpg.Connection, execution_id: str) -> Loaded | None:
        """The execution `execution_id`, locked for the caller's transaction; None when there is none."""
        row = await self.lock_execution(conn, execution_id)
        return self.restore(row) if row is not None else None

    async def save(
        self,
        conn: asyncpg.Connection,
        outbox: OutboxWriter,
        loaded: Loaded,
        *,
        now: datetime,
        runnable: bool,
        owner: str | None = None,
        set_owner: bool = False,
        lease_seconds: float = 0.0,
        gate_ids: Mapping[str, str] | None = None,
        traceparent: str | None = None,
    ) -> None:
        """Persist `loaded.execution` and publish its step changes: an `ExecutionStepChanged` outbox row, in the same
        transaction, for each step whose status (or attempt) changed since it was loaded, so consumers see every
        transition as it was committed. They continue `traceparent` (the event that caused the change), else the
        current span or the execution's stored trace."""
        execution = loaded.execution
        traceparent = traceparent or current_traceparent(loaded.traceparent)
        for step in execution.steps():
            if loaded.before.get(step.path) != (step.status, step.attempt):
                gate_id = (gate_ids or {}).get(step.path)
                outbox.add(
                    outbox_record(
                        step_changed(execution, step, at=now, gate_id=gate_id), at=now, traceparent=traceparent
                    )
                )
        running = execution.status == ExecutionStatus.RUNNING
        await self.save_execution(
            conn,
            SavedExecution(
                id=execution.execution_id,
                status=execution.status.value,
                reason=execution.reason,
                state=execution.to_dict(),
                finished_at=execution.finished_at,
                runnable=runnable,
                wake_at=execution.next_wakeup() if running else None,
                set_owner=set_owner,
                owner=owner,
                lease_seconds=lease_seconds,
            ),
        )
        if runnable:
            await self.notify_runner(conn)
        loaded.before = {s.path: (s.status, s.attempt) for s in execution.steps()}

    async def lock_execution(self, conn: asyncpg.Connection, execution_id: str) -> asyncpg.Record | None:
        """The execution `execution_id`, locked for this transaction (waits for another holder)."""
        return await conn.fetchrow(
            f"SELECT {_EXECUTION_COLUMNS} FROM {self._t('executions')} WHERE id = $1 FOR UPDATE",  # noqa: S608
            execution_id,
        )

    async def claim(self, conn: asyncpg.Connection, me: str, now: datetime, limit: int) -> list[asyncpg.Record]:
        """Executions this replica should move on now, locked; rows another transaction holds are skipped.

        Due: marked runnable, a wait or script deadline passed (`now` is the executor's clock), or the replica that
        ran its scripts stopped renewing its lease (the restart rule applies). Executions whose scripts run on
        another live replica are left to it: only the replica running a script may report on it or kill it."""
        return await conn.fetch(
            f"""SELECT {_EXECUTION_COLUMNS} FROM {self._t("executions")}
                WHERE (runnable
                       OR (status = 'RUNNING' AND wake_at <= $2)
                       OR (status = 'RUNNING' AND owner IS NOT NULL AND owner <> $1 AND lease_until < now()))
                  AND (owner IS NULL OR owner = $1 OR lease_until < now())
                ORDER BY updated_at LIMIT $3
                FOR UPDATE SKIP LOCKED""",  # noqa: S608
            me,
            now,
            limit,
        )

    async def save_execution(self, conn: asyncpg.Connection, saved: SavedExecution) -> None:
        """Write an execution's new state (the caller holds its row lock)."""
        await conn.execute(
            f"""UPDATE {self._t("executions")} SET status = $2, reason = $3, state = $4, finished_at = $5,
                    runnable = $6, wake_at = $7,
                    owner = CASE WHEN $8 THEN $9 ELSE owner END,
                    lease_until = CASE WHEN $8 THEN now() + make_interval(secs => $10) ELSE lease_until END,
                    updated_at = now()
                WHERE id = $1""",  # noqa: S608
            saved.id,
            saved.status,
            saved.reason,
            saved.state,
            saved.finished_at,
            saved.runnable,
            saved.wake_at,
            saved.set_owner,
            saved.owner,
            saved.lease_seconds,
        )

    async def fail_execution(self, conn: asyncpg.Connection, execution_id: str, reason: str, at: datetime) -> None:
        """Mark an execution FAILED without its state machine (it could not be loaded or moved on)."""
        await conn.execute(
            f"""UPDATE {self._t("executions")} SET status = 'FAILED', reason = $2, finished_at = $3, runnable = false,
                    wake_at = NULL, owner = NULL, updated_at = now()
                WHERE id = $1""",  # noqa: S608
            execution_id,
            reason,
            at,
        )

    async def renew_leases(self, conn: asyncpg.Connection, me: str, seconds: float) -> int:
        """Extend this replica's claim on the executions whose scripts it runs."""
        result = await conn.execute(
            f"""UPDATE {self._t("executions")} SET lease_until = now() + make_interval(secs => $2)
                WHERE owner = $1""",  # noqa: S608
            me,
            seconds,
        )
        return int(result.split()[-1])

    async def release_leases(self, conn: asyncpg.Connection, me: str) -> int:
        """Give up this replica's claims at once (it is stopping and its scripts were killed), so the next replica
        applies the restart rule without waiting for the lease to run out."""
        result = await conn.execute(
            f"""UPDATE {self._t("executions")} SET lease_until = now() - interval '1 second', runnable = true
                WHERE owner = $1""",  # noqa: S608
            me,
        )
        return int(result.split()[-1])

    async def record_script_process(
        self, conn: asyncpg.Connection, key: tuple[str, str, int], owner: str, process: ScriptProcess
    ) -> None:
        """Remember the process of a running script (execution id, step path, attempt)."""
        await conn.execute(
            f"""INSERT INTO {self._t("script_processes")} (execution_id, step_path, attempt, owner, host, pid, started)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (execution_id, step_path, attempt)
                DO UPDATE SET owner = $4, host = $5, pid = $6, started = $7, recorded_at = now()""",  # noqa: S608
            *key,
            owner,
            process.host,
            process.pid,
            process.started,
        )

    async def record_script_starting(self, conn: asyncpg.Connection, key: tuple[str, str, int], owner: str) -> None:
        """Remember that a script (execution id, step path, attempt) is about to be spawned: written before the
        process exists, so a script without a row is known never to have started (see `script_processes`)."""
        await conn.execute(
            f"""INSERT INTO {self._t("script_processes")} (execution_id, step_path, attempt, owner)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (execution_id, step_path, attempt) DO UPDATE SET owner = $4, recorded_at = now()""",  # noqa: S608
            *key,
            owner,
        )

    async def script_processes(
        self, conn: asyncpg.Connection, execution_id: str
    ) -> dict[tuple[str, int], ScriptProcess | None]:
        """The scripts of `execution_id` that were started, by (step path, attempt): their process, or None when
        it was about to be spawned and is not known (it died with its replica, if it ever ran)."""
        rows = await conn.fetch(
            f"""SELECT step_path, attempt, host, pid, started FROM {self._t("script_processes")}
                WHERE execution_id = $1""",  # noqa: S608
            execution_id,
        )
        return {
            (r["step_path"], r["attempt"]): ScriptProcess(r["host"], r["pid"], r["started"])
            if r["pid"] is not None
            else None
            for r in rows
        }

    async def forget_script_processes(
        self, conn: asyncpg.Connection, execution_id: str, step_path: str | None = None
    ) -> None:
        """Drop the process records of an execution's scripts (one step's, or all) once they are known gone."""
        await conn.execute(
            f"""DELETE FROM {self._t("script_processes")}
                WHERE execution_id = $1 AND ($2::text IS NULL OR step_path = $2)""",  # noqa: S608
            execution_id,
            step_path,
        )

    async def notify_runner(self, conn: asyncpg.Connection) -> None:
        """Wake the runners when this transaction commits."""
        await conn.execute("SELECT pg_notify($1, '')", runner_channel(self.schema))

    # ------------------------------------------------------------------------------------------------ gates, logs

    async def record_gate(
        self,
        conn: asyncpg.Connection,
        *,
        execution_id: str,
        step_path: str,
        attempt: int,
        gate_id: str,
        token: str,
        message: str,
        opened_at: datetime,
        expires_at: datetime,
    ) -> bool:
        """Remember the gate of a waiting approval step (from GateOpened); False when already known."""
        inserted = await conn.fetchval(
            f"""INSERT INTO {self._t("gates")}
                    (execution_id, step_path, attempt, gate_id, token, message, opened_at, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (execution_id, step_path, attempt) DO NOTHING RETURNING true""",  # noqa: S608
            execution_id,
            step_path,
            attempt,
            gate_id,
            token,
            message,
            opened_at,
            expires_at,
        )
        return bool(inserted)

    async def gates_of(self, conn: asyncpg.Connection, execution_id: str) -> list[asyncpg.Record]:
        """The gates opened for an execution's approval steps (every attempt)."""
        return await conn.fetch(
            f"""SELECT execution_id, step_path, attempt, gate_id, token, message, opened_at, expires_at
                FROM {self._t("gates")} WHERE execution_id = $1""",  # noqa: S608
            execution_id,
        )

    async def record_log(
        self,
        conn: asyncpg.Connection,
        *,
        execution_id: str,
        step_path: str,
        attempt: int,
        exit_code: int | None,
        output: str,
        at: datetime,
    ) -> None:
        """Keep the end of a script's output with its exit code (None: it timed out)."""
        await conn.execute(
            f"""INSERT INTO {self._t("step_logs")} (execution_id, step_path, attempt, exit_code, output, at)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (execution_id, step_path, attempt) DO UPDATE SET exit_code = $4, output = $5, at = $6""",  # noqa: S608
            execution_id,
            step_path,
            attempt,
            exit_code,
            output,
            at,
        )

    async def logs_of(self, conn: asyncpg.Connection, execution_id: str) -> list[asyncpg.Record]:
        """The script outputs of an execution, in the order the scripts ended."""
        return await conn.fetch(
            f"""SELECT step_path, attempt, exit_code, output, at FROM {self._t("step_logs")}
                WHERE execution_id = $1 ORDER BY at, step_path""",  # noqa: S608
            execution_id,
        )

    # ------------------------------------------------------------------------------------------------ refusals

    async def record_refusal(
        self, conn: asyncpg.Connection, execution_id: str, pipeline_id: str, reason: str, error: str, at: datetime
    ) -> None:
        """Remember why an execution request was refused (it was also dead-lettered)."""
        await conn.execute(
            f"""INSERT INTO {self._t("refusals")} (execution_id, pipeline_id, reason, error, at)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT (execution_id) DO NOTHING""",  # noqa: S608
            execution_id,
            pipeline_id,
            reason,
            error,
            at,
        )

    async def refusal(self, conn: asyncpg.Connection, execution_id: str) -> asyncpg.Record | None:
        """Why the request for `execution_id` was refused, if it was."""
        return await conn.fetchrow(
            f"SELECT execution_id, pipeline_id, reason, error, at FROM {self._t('refusals')} WHERE execution_id = $1",  # noqa: S608
            execution_id,
        )

    # ------------------------------------------------------------------------------------------------ reads (CLI)

    async def find_execution(self, conn: asyncpg.Connection, execution_id: str) -> asyncpg.Record | None:
        """One execution, without a lock."""
        return await conn.fetchrow(
            f"SELECT {_EXECUTION_COLUMNS} FROM {self._t('executions')} WHERE id = $1",  # noqa: S608
            execution_id,
        )

    async def latest_execution(self, conn: asyncpg.Connection, pipeline_id: str) -> asyncpg.Record | None:
        """The most recent execution of a pipeline."""
        return await conn.fetchrow(
            f"""SELECT {_EXECUTION_COLUMNS} FROM {self._t("executions")} WHERE pipeline_id = $1
                ORDER BY sequence_id DESC LIMIT 1""",  # noqa: S608
            pipeline_id,
        )

    async def pipelines_page(self, conn: asyncpg.Connection, after: str | None, limit: int) -> list[asyncpg.Record]:
        """Pipelines that have run, by identifier, after `after`: identifier, name, first start, last change."""
        return await conn.fetch(
            f"""SELECT p.identifier, p.name, p.updated_at,
                       (SELECT min(e.started_at) FROM {self._t("executions")} e WHERE e.pipeline_id = p.identifier)
                           AS created_at
                FROM {self._t("pipelines")} p WHERE $1::text IS NULL OR p.identifier > $1
                ORDER BY p.identifier LIMIT $2""",  # noqa: S608
            after,
            limit,
        )

    async def executions_page(
        self, conn: asyncpg.Connection, pipeline_id: str, before_sequence: int | None, limit: int
    ) -> list[asyncpg.Record]:
        """Executions of one pipeline, newest first, with a sequence number below `before_sequence`."""
        return await conn.fetch(
            f"""SELECT {_EXECUTION_COLUMNS} FROM {self._t("executions")}
                WHERE pipeline_id = $1 AND ($2::bigint IS NULL OR sequence_id < $2)
                ORDER BY sequence_id DESC LIMIT $3""",  # noqa: S608
            pipeline_id,
            before_sequence,
            limit,
        )

    async def list_executions(
        self, conn: asyncpg.Connection, pipeline_id: str | None = None, limit: int = 50
    ) -> list[asyncpg.Record]:
        """Executions, newest first."""
        return await conn.fetch(
            f"""SELECT {_EXECUTION_COLUMNS} FROM {self._t("executions")}
                WHERE ($1::text IS NULL OR pipeline_id = $1)
                ORDER BY started_at DESC, id LIMIT $2""",  # noqa: S608
            pipeline_id,
            limit,
        )
