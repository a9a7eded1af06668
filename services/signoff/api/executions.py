"""Executions through the api: start (`run`), list, logs, abort, CodePipeline's pipeline state.

Starts and aborts are published as `ExecutionRequested` / `ExecutionAbortRequested`, like any other system would;
the authenticated user is the triggerer of what it starts, and only the triggerer (or an admin) may abort.
Reads go to the executor schema through its repository, read-only; a start also reads the approval directory (the
groups and users its approval steps name, through the approval repository) to refuse, before anything runs, an
approval step the approval service would refuse when its gate opens.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.api import gates, models
from signoff.api.identity import Principal
from signoff.api.problems import ApiProblem, nul_problem, refuse_nul
from signoff.api.start_policy import ApprovalCheck, approval_checks, start_policy_issues
from signoff.approval.repository import ApprovalRepository
from signoff.catalog import Catalog
from signoff.catalog.yamldoc import describe_issues
from signoff.contracts.topics import EXECUTION_REQUESTS
from signoff.executor.domain.pipeline import Pipeline
from signoff.executor.domain.state import ExecutionStatus
from signoff.executor.repository import ExecutorRepository
from signoff.executor.validation import StartRefused, check_start
from signoff.executor.views import execution_summary, pipeline_state
from signoff.kernel import user_key
from signoff.runtime import tracing

log = structlog.get_logger(__name__)

EVENT_SOURCE = "urn:signoff:api"
ADMIN = "admin"
POLL_SECONDS = 0.2


CONCURRENT_CHECKS = 2
"""Pipeline checks one api replica runs at once (one per core of a typical pod, with room for the event loop)."""


def _invalid_pipeline(message: str) -> ApiProblem:
    return ApiProblem(422, "invalid_pipeline", message, errors=[{"field": "pipeline_yaml", "message": message}])


class ExecutionDesk:
    """Starts, aborts and reads executions."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        catalog: Catalog | None,
        wait_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        requests_topic: str = EXECUTION_REQUESTS.name,
        repository: ExecutorRepository | None = None,
        approval: ApprovalRepository | None = None,
    ) -> None:
        self.pool, self.producer, self.catalog = pool, producer, catalog
        self.wait_seconds, self.clock, self.requests_topic = wait_seconds, clock, requests_topic
        self.repository = repository or ExecutorRepository()
        self.approval = approval or ApprovalRepository()
        # Pipeline checks at once: each is CPU in a thread sharing the interpreter with the event loop, so many large
        # documents at the same time would starve every other request; the rest wait their turn.
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def _publish(self, data: wire.EventData) -> None:
        # Under the request's span when tracing is on: the run's trace starts (or continues the caller's) here.
        event = wire.new_event(data, source=EVENT_SOURCE, traceparent=tracing.current_traceparent())
        value, headers = wire.encode(event)
        try:
            await self.producer.send_and_wait(self.requests_topic, value, key=wire.message_key(event), headers=headers)
        except Exception as exc:  # any broker failure: nothing was requested, the client may retry
            log.warning("execution_request_publish_failed", error=str(exc))
            raise ApiProblem(503, "broker_unavailable", "the request could not be sent; try again") from None

    async def start(self, principal: Principal, request: models.ExecutionRequest) -> models.ExecutionStarted:
        """Validate as `signoff run` does, then request the execution with `principal` as its triggerer.

        Validating is CPU-bound and grows with the document: it runs in a worker thread, so one request's pipeline
        never holds up the other requests on the event loop. Then its approval steps are asked what the approval
        service would refuse when their gates open (`signoff.api.start_policy`), before any step runs."""
        try:
            async with self._checks:
                pipeline, checks = await asyncio.to_thread(self._check, principal, request)
        except StartRefused as exc:
            raise _invalid_pipeline(str(exc)) from None
        async with self.pool.acquire() as conn:
            issues = await start_policy_issues(conn, self.approval, checks, principal.user) if checks else []
            # <+pipeline.triggeredBy.email>: the directory's, never one the client names.
            email = await self.approval.email_of(conn, principal.user)
        if issues:
            raise _invalid_pipeline(f"invalid pipeline: {describe_issues(issues)}")
        execution_id = uuid.uuid4().hex
        try:
            data = wire.ExecutionRequested(
                execution_id=execution_id,
                pipeline_id=pipeline.identifier,
                variables=request.variables,
                triggered_by=wire.Person(user=principal.user, email=email),
                requested_at=self.clock(),
                pipeline_yaml=request.pipeline_yaml,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ApiProblem(
                422, "invalid_request", f"{field}: {first['msg']}", errors=[{"field": field, "message": first["msg"]}]
            ) from None
        refuse_nul(data, "invalid_request")
        await self._publish(data)
        log.info("execution_requested", execution_id=execution_id, pipeline=pipeline.identifier, user=principal.user)
        return models.ExecutionStarted(
            execution_id=execution_id, pipeline=pipeline.identifier, triggered_by=principal.user
        )

    def _check(self, principal: Principal, request: models.ExecutionRequest) -> tuple[Pipeline, list[ApprovalCheck]]:
        pipeline = check_start(
            request.pipeline_yaml, catalog=self.catalog, variables=request.variables, user=principal.user
        )
        return pipeline, approval_checks(pipeline)

    async def list(self, pipeline: str | None, limit: int) -> list[models.ExecutionSummary]:
        async with self.pool.acquire() as conn:
            rows = await self.repository.list_executions(conn, pipeline, limit)
        return [models.ExecutionSummary(**execution_summary(row)) for row in rows]

    async def get(self, execution_id: str) -> models.ExecutionDetail:
        """An execution, or why the executor refused it; 404 when neither is known (yet)."""
        async with self.pool.acquire() as conn:
            row = await self.repository.find_execution(conn, execution_id)
            refusal = await self.repository.refusal(conn, execution_id)
        if row is None and refusal is None:
            raise ApiProblem(404, "unknown_execution", f"no execution {execution_id} (yet)")
        refused = f"{refusal['reason']}: {refusal['error']}" if refusal is not None else None
        if row is None:
            assert refusal is not None
            return models.ExecutionDetail(
                execution_id=execution_id,
                pipeline=refusal["pipeline_id"] or "",
                pipeline_name=refusal["pipeline_id"] or "",
                sequence=0,
                status="REFUSED",
                reason=refused,
                triggered_by=None,
                started_at=refusal["at"],
                finished_at=refusal["at"],
                current=[],
                refused=refused,
            )
        return models.ExecutionDetail(**execution_summary(row), refused=refused)

    async def logs(self, principal: Principal, execution_id: str) -> models.ExecutionLogs:
        """The scripts' output: for who started the execution, who may decide one of its gates, and admins (script
        output holds what scripts print, credentials included; the list of executions stays open to all)."""
        async with self.pool.acquire() as conn:
            execution = await self.repository.find_execution(conn, execution_id)
            if execution is None:
                raise ApiProblem(404, "unknown_execution", f"no execution {execution_id}")
            if not await self._may_read_logs(conn, principal, execution):
                raise ApiProblem(
                    403,
                    "not_permitted",
                    f"only who started execution {execution_id}, an approver of its gates or an admin may read its "
                    "logs",
                )
            rows = await self.repository.logs_of(conn, execution_id)
        logged = {(row["step_path"], row["attempt"]) for row in rows}
        return models.ExecutionLogs(
            execution_id=execution_id,
            logs=[
                models.StepLog(
                    step_path=row["step_path"], attempt=row["attempt"], exit_code=row["exit_code"], output=row["output"]
                )
                for row in rows
            ],
            failures=[
                models.StepFailure(
                    step_path=step["path"],
                    attempt=step["attempt"],
                    status=step["status"],
                    reason=step.get("reason") or "",
                )
                for step in execution["state"]["steps"]
                if step["status"] in ("FAILED", "EXPIRED") and (step["path"], step["attempt"]) not in logged
            ],
        )

    async def _may_read_logs(self, conn: asyncpg.Connection, principal: Principal, execution: Any) -> bool:
        if principal.may(ADMIN):
            return True
        triggerer = (execution["triggered_by"] or {}).get("user")
        if triggerer is not None and user_key(triggerer) == user_key(principal.user):
            return True
        return any(
            gates.load(row, []).gate.is_eligible(principal.user)
            for row in await self.approval.gates_of_execution(conn, execution["id"])
        )

    async def pipeline_state(self, name: str) -> dict[str, Any]:
        """CodePipeline's `get-pipeline-state` document of the pipeline's latest execution."""
        async with self.pool.acquire() as conn:
            row = await self.repository.latest_execution(conn, name)
            if row is None:
                raise ApiProblem(404, "unknown_pipeline", f"no execution of pipeline {name!r}")
            gates = list(await self.repository.gates_of(conn, row["id"]))
        return pipeline_state(row, gates)

    async def abort(self, principal: Principal, execution_id: str, reason: str) -> tuple[int, models.ExecutionDetail]:
        """Abort a running execution (its triggerer or an admin); answers once it ended, or 202 after the wait."""
        if "\x00" in reason:  # the executor could not store it: the abort would be dead-lettered, not done
            raise nul_problem("reason", "invalid_request")
        async with self.pool.acquire() as conn:
            row = await self.repository.find_execution(conn, execution_id)
        if row is None:
            raise ApiProblem(404, "unknown_execution", f"no execution {execution_id}")
        triggerer = (row["triggered_by"] or {}).get("user")
        if triggerer != principal.user and not principal.may(ADMIN):
            raise ApiProblem(
                403,
                "not_permitted",
                f"only {triggerer} (who started it) or an admin may abort execution {execution_id}",
            )
        if row["status"] != ExecutionStatus.RUNNING:
            raise ApiProblem(409, "already_ended", f"execution {execution_id} already ended ({row['status'].lower()})")
        abort = wire.ExecutionAbortRequested(
            execution_id=execution_id,
            requested_by=wire.Person(user=principal.user),
            reason=reason,
            requested_at=self.clock(),
        )
        refuse_nul(abort, "invalid_request")
        await self._publish(abort)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while loop.time() < deadline:
            current = await self.get(execution_id)
            if current.status != ExecutionStatus.RUNNING:
                return 200, current
            await asyncio.sleep(POLL_SECONDS)  # polls the executor's own record: no event tells the api
        return 202, await self.get(execution_id)
