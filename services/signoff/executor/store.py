"""Saving an execution (loaded by the repository as its aggregate) back with the events its change publishes.

Every save writes the new state and, in the same transaction, an `ExecutionStepChanged` outbox row for each step
whose status (or attempt) changed since it was loaded: consumers see every transition exactly as it was committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from signoff.executor.domain.execution import Execution
from signoff.executor.domain.state import ExecutionStatus, StepStatus
from signoff.executor.mapping import outbox_record, step_changed
from signoff.executor.repository import ExecutorRepository, Loaded, SavedExecution
from signoff.runtime.outbox import OutboxWriter
from signoff.runtime.tracing import current_traceparent


def running_scripts(execution: Execution) -> list[str]:
    """Paths of the ShellScript steps that run now (a process exists, or should)."""
    return [s.path for s in execution.steps() if s.type == "ShellScript" and s.status == StepStatus.RUNNING]


async def save(
    conn: asyncpg.Connection,
    repository: ExecutorRepository,
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
    """Persist `loaded.execution` and publish its step changes (outbox, same transaction). They continue
    `traceparent` (the event that caused the change), else the current span or the execution's stored trace."""
    execution = loaded.execution
    traceparent = traceparent or current_traceparent(loaded.traceparent)
    for step in execution.steps():
        if loaded.before.get(step.path) != (step.status, step.attempt):
            gate_id = (gate_ids or {}).get(step.path)
            outbox.add(
                outbox_record(step_changed(execution, step, at=now, gate_id=gate_id), at=now, traceparent=traceparent)
            )
    running = execution.status == ExecutionStatus.RUNNING
    await repository.save_execution(
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
        await repository.notify_runner(conn)
    loaded.before = {s.path: (s.status, s.attempt) for s in execution.steps()}
