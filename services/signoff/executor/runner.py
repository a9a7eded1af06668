"""The runner: a background task of the executor role that moves executions on, outside the consumer's transaction.

Each pass claims due executions with FOR UPDATE SKIP LOCKED (several replicas never take the same one), applies
the restart rule where the replica that ran their scripts is gone, applies the clock (`tick`), asks the state
machine for its next actions, and in the same transaction saves the state and writes what to publish (approval
requests and cancels, step changes, the end) to the outbox. Only after that commit does it start the scripts it
dispatched, as asyncio tasks of this replica; the replica owns those executions (`owner`, a lease it renews) until
their scripts end, so only it reports on them or kills them. A script's end is reported in a transaction of its
own (state + step log + step change), and the execution is marked runnable for the next pass.

Stopping kills this replica's scripts without reporting and releases its leases at once: the next replica to claim
those executions applies the restart rule (docs/pipelines.md, "Restart rule") instead of waiting for the lease to
run out. A replica that dies without stopping loses its lease after `script_lease_seconds`.

Never two attempts of one step at once: a replica's scripts die with it (scripts.py, parent-death signal); a
replica that could not renew its lease (renewed every quarter of `script_lease_seconds`) for three quarters of it
kills its scripts itself (it may be about to lose them to another replica); and the replica that resumes an
execution kills what is left of the earlier attempt when it runs on the same host (its process is recorded in
`script_processes`) before it applies the restart rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.contracts.events import FailureCause
from signoff.executor.domain.actions import (
    CancelApproval,
    CancelStep,
    ExecutionFinished,
    RequestApproval,
    RunShellScript,
    StartWait,
)
from signoff.executor.mapping import approval_requested, finished, outbox_record
from signoff.executor.metrics import (
    EXECUTIONS_FINISHED,
    RUNNER_PASS_SECONDS,
    SCRIPT_SECONDS,
    SCRIPTS_RUNNING,
    SCRIPTS_WAITING,
)
from signoff.executor.repository import ExecutorRepository, Loaded, runner_channel
from signoff.executor.script_runner import ScriptRunnerUnavailable
from signoff.executor.scripts import RunsScripts, ScriptProcess, ScriptResult, ensure_gone, run_script
from signoff.runtime import tracing
from signoff.runtime.clock import Clock
from signoff.runtime.consumer import TRANSIENT_ERRORS
from signoff.runtime.outbox import OutboxWriter

log = structlog.get_logger(__name__)

FENCE_AFTER = 0.75
"""A replica that could not renew its lease for this fraction of it kills its scripts (renewals come every quarter)."""

ScriptKey = tuple[str, str, int]
"""(execution id, step path, attempt) of a running script."""


class Runner:
    """Moves executions on; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock,
        *,
        catalog: Catalog | None = None,
        repository: ExecutorRepository | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        batch_size: int = 20,
        instance: str | None = None,
        max_scripts: int = 32,
        run_scripts: RunsScripts = run_script,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.catalog = catalog
        self.repository = repository or ExecutorRepository(catalog=catalog)
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.instance = instance or f"executor-{uuid.uuid4().hex[:12]}"
        self.scripts: dict[ScriptKey, asyncio.Task[None]] = {}
        # run_script here, or a ScriptRunnerClient: the script then runs in the script runner (script_runner.py).
        self._run_scripts = run_scripts
        # Started steps beyond this wait in their task (still this replica's: leased, cancellable, not "lost").
        self._script_slots = asyncio.Semaphore(max_scripts)
        self._wake = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------------------------------------ passes

    async def run_once(self) -> int:
        """One pass: claim due executions, move each on, commit, then start the scripts dispatched. Returns how many
        executions were claimed."""
        now = self.clock.now()
        started_at = time.perf_counter()
        to_start: list[tuple[RunShellScript, str | None]] = []  # with the traceparent they continue
        to_cancel: list[ScriptKey] = []
        ended: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await self.repository.claim(conn, self.instance, now, self.batch_size)
            for row in rows:
                outbox = OutboxWriter(self.repository.schema)
                try:
                    # A savepoint per execution: one that cannot be moved on must not hold up the others. What it
                    # publishes continues the run's trace (stored with the execution), under a span of this pass.
                    with tracing.span(
                        "executor advance", parent=row["traceparent"], attributes={"signoff.execution_id": row["id"]}
                    ):
                        # The scripts it starts run under spans of their own, children of this one.
                        parent = tracing.current_traceparent(row["traceparent"])
                        async with conn.transaction():
                            loaded = self.repository.restore(row)
                            started, cancelled, finish = await self._advance(conn, outbox, loaded, now)
                            await outbox.flush(conn)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:
                    await self._fail_broken(conn, row, exc, now)
                    to_cancel.extend(key for key in self.scripts if key[0] == row["id"])
                    ended.append("FAILED")
                    continue
                to_start.extend((action, parent) for action in started)
                to_cancel.extend(cancelled)
                ended.extend(finish)
        for status in ended:
            EXECUTIONS_FINISHED.labels(status).inc()
        if rows:
            RUNNER_PASS_SECONDS.observe(time.perf_counter() - started_at)
        for key in to_cancel:
            task = self.scripts.pop(key, None)
            if task is not None:
                task.cancel()
        for action, traceparent in to_start:
            self._start_script(action, traceparent)
        return len(rows)

    async def _fail_broken(
        self, conn: asyncpg.Connection, row: Mapping[str, Any], exc: Exception, now: datetime
    ) -> None:
        """An execution the runner cannot move on (a stored state it cannot load, a bug) fails, visibly, instead of
        being retried forever or silently parked."""
        log.error("execution_broken", execution_id=row["id"], error=repr(exc))
        reason = f"the executor could not continue this execution: {type(exc).__name__}: {exc}"[:4096]
        await self.repository.fail_execution(conn, row["id"], reason, now)
        outbox = OutboxWriter(self.repository.schema)
        failed = wire.ExecutionFailed(
            execution_id=row["id"],
            pipeline_id=row["pipeline_id"],
            cause=FailureCause.STEP_FAILED,
            error=reason,
            finished_at=now,
        )
        outbox.add(outbox_record(failed, at=now, traceparent=row["traceparent"]))
        await outbox.flush(conn)

    async def _advance(
        self, conn: asyncpg.Connection, outbox: OutboxWriter, loaded: Loaded, now: datetime
    ) -> tuple[list[RunShellScript], list[ScriptKey], list[str]]:
        execution = loaded.execution
        owner = loaded.row["owner"]
        if owner is not None and owner != self.instance and execution.running_scripts():
            # The replica running its scripts stopped renewing its lease: it died (its scripts with it) or fenced
            # itself; what may be left of them on this host is killed before anything starts again.
            log.warning("recovering_execution", execution_id=execution.execution_id, previous_owner=owner)
            never_started = await self._ensure_earlier_attempts_gone(conn, execution)
            execution.recover(now, never_started)
        elif owner == self.instance and execution.running_scripts():
            # Our own scripts, but no task runs any of them (a task that died without reporting; should not
            # happen): never leave the execution hanging. While one still runs, a lost sibling fails at its deadline.
            keys = [
                (execution.execution_id, path, execution.step(path).attempt) for path in execution.running_scripts()
            ]
            if not any(key in self.scripts for key in keys):
                execution.recover(now)
        execution.tick(now)
        actions = execution.next_actions(now)
        traceparent = tracing.current_traceparent(loaded.traceparent)
        gates = {row["step_path"]: row for row in await self.repository.gates_of(conn, execution.execution_id)}
        start: list[RunShellScript] = []
        cancel: list[ScriptKey] = []
        ended: list[str] = []
        for action in actions:
            match action:
                case RunShellScript():
                    start.append(action)
                case StartWait():
                    pass  # the runner claims the execution again at wake_at (its deadline)
                case RequestApproval():
                    request = approval_requested(action.request, loaded.triggered_by)
                    outbox.add(outbox_record(request, at=now, traceparent=traceparent))
                case CancelStep():
                    cancel.append((action.execution_id, action.step_path, action.attempt))
                case CancelApproval():
                    gate = gates.get(action.step_path)
                    step = execution.step(action.step_path)
                    stage = execution.plan.stage(step.stage)
                    cancel_request = wire.ApprovalCancelRequested(
                        key=wire.GateKey(
                            pipeline_id=execution.pipeline.identifier,
                            execution_id=execution.execution_id,
                            stage_id=stage.identifier,
                            step_id=step.identifier,
                            attempt=action.attempt,
                        ),
                        gate_id=gate["gate_id"] if gate is not None and gate["attempt"] == action.attempt else None,
                        reason=action.reason[:4096],
                        requested_at=now,
                    )
                    outbox.add(outbox_record(cancel_request, at=now, traceparent=traceparent))
                case ExecutionFinished():
                    outbox.add(outbox_record(finished(execution, action), at=now, traceparent=traceparent))
                    ended.append(action.status)
        scripts = execution.running_scripts()
        await self.repository.save(
            conn,
            outbox,
            loaded,
            now=now,
            runnable=False,
            set_owner=True,
            owner=self.instance if scripts else None,
            lease_seconds=self.lease_seconds,
        )
        return start, cancel, ended

    async def _ensure_earlier_attempts_gone(self, conn: asyncpg.Connection, execution) -> set[str]:
        """Kill what is left on this host of the scripts of `execution`'s RUNNING steps; returns the steps whose
        script never started (no row: it waited for a slot on the replica that is gone)."""
        processes = await self.repository.script_processes(conn, execution.execution_id)
        never_started: set[str] = set()
        for path in execution.running_scripts():
            key = (path, execution.step(path).attempt)
            if key not in processes:
                never_started.add(path)
                continue
            process = processes[key]
            if process is None:
                continue  # about to be spawned when its replica stopped: if it ran, it died with that replica
            if await ensure_gone(process):
                log.info("earlier_attempt_gone", execution_id=execution.execution_id, step=path, pid=process.pid)
            else:
                # Still there after SIGKILL: stuck in the kernel, it cannot run another line of the script.
                log.error("earlier_attempt_unkillable", execution_id=execution.execution_id, step=path, pid=process.pid)
        await self.repository.forget_script_processes(conn, execution.execution_id)
        return never_started

    # ------------------------------------------------------------------------------------------------ scripts

    def _start_script(self, action: RunShellScript, traceparent: str | None = None) -> None:
        key = (action.execution_id, action.step_path, action.attempt)
        log.info("script_started", execution_id=action.execution_id, step=action.step_path, attempt=action.attempt)
        task = asyncio.create_task(
            self._script(action, traceparent), name=f"script {action.execution_id} {action.step_path}"
        )
        self.scripts[key] = task

    async def _script(self, action: RunShellScript, traceparent: str | None = None) -> None:
        """Run the script and report its end, under a span of the run's trace (`traceparent`): the step change
        its report publishes continues it."""
        attributes = {
            "signoff.execution_id": action.execution_id,
            "signoff.step_path": action.step_path,
            "signoff.attempt": action.attempt,
        }
        with tracing.span(f"executor script {action.step_path}", parent=traceparent, attributes=attributes):
            await self._run_script(action)

    async def _run_script(self, action: RunShellScript) -> None:
        key = (action.execution_id, action.step_path, action.attempt)
        try:
            async with self._script_slot(action):
                await self._record_starting(action)
                SCRIPTS_RUNNING.inc()
                began = time.perf_counter()
                try:
                    result = await self._run_scripts(action, on_started=lambda process: self._record(action, process))
                except asyncio.CancelledError:
                    SCRIPT_SECONDS.labels("cancelled").observe(time.perf_counter() - began)
                    raise  # cancelled by the state machine (abort, deadline) or by stop(): nothing to report
                except ScriptRunnerUnavailable as exc:
                    result = ScriptResult(exit_code=None, error=f"could not run the script: {exc}")
                except Exception as exc:  # could not even start (no bash, no temp dir): a step failure, not a crash
                    result = ScriptResult(exit_code=None, error=f"could not run the script: {exc!r}")
                finally:
                    SCRIPTS_RUNNING.dec()
            SCRIPT_SECONDS.labels("succeeded" if result.succeeded else "failed").observe(time.perf_counter() - began)
            # The database is away: keep the result and retry (the lease keeps other replicas off).
            await self._until_written("script_report_retry", action, lambda: self._report(action, result))
        finally:
            # A task that ended without reporting leaves its step RUNNING with no process: the next pass over the
            # execution finds no task for it and applies the restart rule (see _advance).
            if self.scripts.get(key) is asyncio.current_task():
                del self.scripts[key]
            self._wake.set()

    @contextlib.asynccontextmanager
    async def _script_slot(self, action: RunShellScript) -> AsyncIterator[None]:
        """One of the replica's `max_scripts` process slots; when all are taken, the step waits here for one (said
        once in the log; counted by signoff_executor_scripts_waiting). Its deadline still runs meanwhile."""
        if self._script_slots.locked():
            log.info("script_waiting_for_slot", execution_id=action.execution_id, step=action.step_path)
        SCRIPTS_WAITING.inc()
        try:
            await self._script_slots.acquire()
        finally:
            SCRIPTS_WAITING.dec()
        try:
            yield
        finally:
            self._script_slots.release()

    async def _record_starting(self, action: RunShellScript) -> None:
        """Write the script's row before its process exists, retrying while the database is away: a script is
        never spawned unrecorded, so a replica resuming the execution knows a step without a row never ran."""
        key = (action.execution_id, action.step_path, action.attempt)

        async def write() -> None:
            async with self.pool.acquire() as conn:
                await self.repository.record_script_starting(conn, key, self.instance)

        await self._until_written("script_start_not_recorded", action, write)

    @staticmethod
    async def _until_written(event: str, action: RunShellScript, write: Callable[[], Awaitable[None]]) -> None:
        """Run `write` until it gets through transient database errors, each logged as `event`, with bounded
        backoff."""
        delay = 0.1
        while True:
            try:
                await write()
                return
            except TRANSIENT_ERRORS as exc:
                log.warning(event, execution_id=action.execution_id, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)  # backing off from an unreachable database
                delay = min(delay * 2, 5.0)

    async def _record(self, action: RunShellScript, process: ScriptProcess) -> None:
        """Remember the script's process, so a replica resuming the execution can make sure it is gone."""
        key = (action.execution_id, action.step_path, action.attempt)
        try:
            async with self.pool.acquire() as conn:
                await self.repository.record_script_process(conn, key, self.instance, process)
        except Exception as exc:
            # Not fatal: the script still dies with this replica, or when it fences itself.
            log.warning("script_process_not_recorded", execution_id=action.execution_id, error=repr(exc))

    async def _report(self, action: RunShellScript, result: ScriptResult) -> None:
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            loaded = await self.repository.lock(conn, action.execution_id)
            if loaded is None:
                return
            execution = loaded.execution
            if result.succeeded:
                changed = execution.step_succeeded(action.step_path, result.outputs, now=now, attempt=action.attempt)
            else:
                reason = result.error or "the script failed"
                changed = execution.step_failed(action.step_path, reason, now=now, attempt=action.attempt)
            await self.repository.record_log(
                conn,
                execution_id=action.execution_id,
                step_path=action.step_path,
                attempt=action.attempt,
                exit_code=result.exit_code,
                output=result.output,
                at=now,
            )
            await self.repository.forget_script_processes(conn, action.execution_id, action.step_path)
            outbox = OutboxWriter(self.repository.schema)
            if changed:
                await self.repository.save(conn, outbox, loaded, now=now, runnable=True)
            await outbox.flush(conn)
        log.info(
            "script_finished",
            execution_id=action.execution_id,
            step=action.step_path,
            attempt=action.attempt,
            exit_code=result.exit_code,
            applied=changed,
        )

    # ------------------------------------------------------------------------------------------------ loop

    async def _renew(self) -> None:
        async with self.pool.acquire() as conn:
            await self.repository.renew_leases(conn, self.instance, self.lease_seconds)

    async def run(self, stopping: asyncio.Event) -> None:
        """Pass after pass until `stopping`: woken by NOTIFY (a handler marked an execution runnable), by a script's
        end, or every `poll_interval` seconds (due waits and deadlines, a lost notification)."""
        listener = await self.pool.acquire()
        channel = runner_channel(self.repository.schema)

        def wake(*_: object) -> None:
            self._wake.set()

        await listener.add_listener(channel, wake)
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        delay = 0.1
        try:
            while not stopping.is_set():
                if not self.scripts:
                    renewed = loop.time()  # nothing leased: the next script's lease starts about now
                elif loop.time() - renewed > self.lease_seconds * FENCE_AFTER:
                    await self._fence(loop.time() - renewed)
                self._wake.clear()
                try:
                    while await self.run_once() and not stopping.is_set():
                        pass
                    if self.scripts and loop.time() - renewed >= self.lease_seconds / 4:
                        await self._renew()
                        renewed = loop.time()
                    delay = 0.1
                except Exception as exc:
                    # PostgreSQL unavailable (or a bug in one execution): nothing was committed; retry with backoff,
                    # waking in time to fence (above) before the lease could run out.
                    log.warning("runner_pass_failed", error=repr(exc), retry_in=delay)
                    fence_in = renewed + self.lease_seconds * FENCE_AFTER - loop.time() if self.scripts else delay
                    await asyncio.sleep(max(0.05, min(delay, fence_in)))
                    delay = min(delay * 2, 10.0)
                    continue
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED), self.poll_interval
                    )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            # Shielded: the service cancels its tasks while stopping, and a cleanup cut short would leave scripts
            # running, leases held, or the listening connection out of the pool (which then never closes).
            await asyncio.shield(self._shut_down(listener, channel, wake))

    async def _shut_down(self, listener: asyncpg.pool.PoolConnectionProxy, channel: str, wake: Any) -> None:
        try:
            await self.stop()
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(channel, wake)
            await self.pool.release(listener)

    async def _fence(self, unrenewed_for: float) -> None:
        """The lease could not be renewed for FENCE_AFTER of its length: another replica may soon take these executions
        over and start the scripts again, so kill them now (no report; the restart rule decides)."""
        log.error(
            "lease_not_renewed_scripts_killed",
            unrenewed_seconds=round(unrenewed_for, 1),
            scripts=[f"{execution_id}/{path}#{attempt}" for execution_id, path, attempt in self.scripts],
        )
        tasks = list(self.scripts.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.scripts.clear()

    async def stop(self) -> None:
        """Kill this replica's scripts (no report) and release its leases, so the restart rule applies at once."""
        if self._stopping:
            return
        self._stopping = True
        tasks = list(self.scripts.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.scripts.clear()
        with contextlib.suppress(Exception):
            async with self.pool.acquire() as conn:
                released = await self.repository.release_leases(conn, self.instance)
            if released:
                log.info("leases_released", executions=released)
