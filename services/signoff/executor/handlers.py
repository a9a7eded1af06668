"""The executor's consumer handler: execution requests start or abort executions, gate events resume or fail them.

Everything happens inside the consumer loop's transaction (`uow.conn`), and every published event is an outbox row
written in that same transaction. The handler only records facts (a new execution, an approval outcome, an abort)
and marks the execution runnable; the runner (a background task, outside the consumer's transaction) moves it on:
starts scripts, requests approvals, announces the end.

A request the executor cannot run (an invalid pipeline, an unknown pipeline id, bad variables, an abort of an
unknown execution) is dead-lettered with a reason code by the handler itself, in the same transaction, and recorded
in `executor.refusals` so `signoff run --wait` can say why; an `ExecutionFailed` (cause `invalid_pipeline`) tells
subscribers too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.catalog.yamldoc import YamlDocumentError, describe_issues, parse_yaml
from signoff.contracts.events import FailureCause
from signoff.contracts.topics import DEAD_LETTER_TOPIC
from signoff.executor.domain.actions import TriggeredBy
from signoff.executor.domain.execution import Execution, InvalidStart
from signoff.executor.domain.pipeline import Pipeline, PipelineError, parse_pipeline
from signoff.executor.domain.state import StepStatus
from signoff.executor.mapping import approved_by, gate_key, outbox_record, rejected_by
from signoff.executor.metrics import REQUESTS_REFUSED
from signoff.executor.repository import ExecutorRepository, Loaded, NewExecution
from signoff.executor.validation import pipeline_problem
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.consumer import Received, UnitOfWork, dead_letter_id, dead_letter_record

log = structlog.get_logger(__name__)


class UnsupportedEvent(ValueError):
    """An event type the executor does not consume (dead-lettered by the loop)."""


class Refused(Exception):
    """A valid event the executor cannot act on; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class ExecutorHandler:
    """`BatchHandler` of the executor service."""

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        clock: Clock | None = None,
        repository: ExecutorRepository | None = None,
        consumer_name: str = "signoff-executor",
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
    ) -> None:
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.repository = repository or ExecutorRepository(catalog=catalog)
        self.consumer_name = consumer_name
        self.dead_letter_topic = dead_letter_topic

    async def apply(self, uow: UnitOfWork, batch: Sequence[Received]) -> None:
        for received in batch:
            data = received.event.data
            try:
                match data:
                    case wire.ExecutionRequested():
                        await self._start(uow, received, data)
                    case wire.ExecutionAbortRequested():
                        await self._abort(uow, received, data)
                    case wire.GateOpened():
                        await self._gate_opened(uow, received, data)
                    case wire.GateApproved() | wire.GateRejected() | wire.GateExpired() | wire.GateCancelled():
                        await self._gate_closed(uow, received, data)
                    case wire.RequestRefused():
                        await self._request_refused(uow, received, data)
                    case wire.VoteRecorded() | wire.DecisionRefused():
                        pass  # votes in progress and refused decisions do not move an execution
                    case _:
                        raise UnsupportedEvent(f"the executor does not consume {received.event.type}")
            except Refused as refused:
                REQUESTS_REFUSED.labels(refused.reason).inc()
                self._refuse(uow, received, refused)
                await self._record_refusal(uow, received, refused)

    # ------------------------------------------------------------------------------------------------ starts

    def _pipeline(self, text: str, source: str) -> Pipeline:
        # A document PostgreSQL could not store (a NUL character or a lone surrogate, from a YAML escape) is refused
        # here by the loader, naming its path with those characters escaped: the refusal's own writes (the
        # refusal row, the dead letter, ExecutionFailed) never hold one.
        try:
            document = parse_yaml(text, source)
        except YamlDocumentError as exc:
            raise Refused("invalid_pipeline", f"{source}: {exc.detail}") from None
        try:
            return parse_pipeline(document, catalog=self.catalog, source=source)
        except PipelineError as exc:
            raise Refused("invalid_pipeline", f"{source}: {pipeline_problem(exc)}") from None

    async def _start(self, uow: UnitOfWork, received: Received, data: wire.ExecutionRequested) -> None:
        now = self.clock.now()
        repo = self.repository
        if await repo.execution_exists(uow.conn, data.execution_id):
            log.info("execution_request_for_existing_execution", execution_id=data.execution_id)
            return
        source = f"pipeline {data.pipeline_id}"
        text = data.pipeline_yaml
        if text is None:
            text = await repo.pipeline_yaml(uow.conn, data.pipeline_id)
            if text is None:
                raise Refused(
                    "unknown_pipeline",
                    f"no pipeline {data.pipeline_id!r} is known: send its definition in pipeline_yaml",
                )
        pipeline = self._pipeline(text, source)
        if pipeline.identifier != data.pipeline_id:
            raise Refused(
                "invalid_pipeline",
                f"{source}: pipeline.identifier {pipeline.identifier!r} differs from pipeline_id {data.pipeline_id!r}",
            )
        person = data.triggered_by
        try:
            # The sequence number is only known after the row lock; start once with 0 to check the variables
            # before anything is written. The first start keeps this parse (checked against the catalog) and its plan
            # in the repository's definitions, the second finds them there, and so does every load of the
            # execution (the runner's, next): the document is parsed once.
            Execution.start(
                pipeline,
                execution_id=data.execution_id,
                sequence_id=0,
                triggered_by=TriggeredBy(name=person.name or person.user, email=person.email),
                now=now,
                variables=data.variables,
                catalog=self.catalog,
                definitions=repo.definitions,
            )
        except InvalidStart as exc:
            raise Refused("invalid_variables", f"{source}: {describe_issues(exc.problems)}") from None
        await repo.save_pipeline(uow.conn, pipeline.identifier, pipeline.name, text, now)
        sequence = await repo.next_sequence(uow.conn, pipeline.identifier)
        execution = Execution.start(
            pipeline,
            execution_id=data.execution_id,
            sequence_id=sequence,
            triggered_by=TriggeredBy(name=person.name or person.user, email=person.email),
            now=now,
            variables=data.variables,
            catalog=self.catalog,
            definitions=repo.definitions,
        )
        await repo.insert_execution(
            uow.conn,
            NewExecution(
                id=execution.execution_id,
                pipeline_id=pipeline.identifier,
                pipeline_name=pipeline.name,
                sequence_id=sequence,
                status=execution.status.value,
                triggered_by=person.model_dump(mode="json"),
                state=execution.to_dict(),
                started_at=now,
                traceparent=received.event.traceparent,
            ),
        )
        await repo.notify_runner(uow.conn)
        started = wire.ExecutionStarted(
            execution_id=execution.execution_id,
            pipeline_id=pipeline.identifier,
            pipeline_name=pipeline.name,
            triggered_by=person,
            started_at=now,
        )
        uow.outbox.add(outbox_record(started, at=now, traceparent=received.event.traceparent))
        log.info(
            "execution_started", execution_id=execution.execution_id, pipeline=pipeline.identifier, sequence=sequence
        )

    async def _abort(self, uow: UnitOfWork, received: Received, data: wire.ExecutionAbortRequested) -> None:
        now = self.clock.now()
        loaded = await self.repository.lock(uow.conn, data.execution_id)
        if loaded is None:
            raise Refused("unknown_execution", f"no execution {data.execution_id!r}")
        who = data.requested_by.name or data.requested_by.user
        reason = f"aborted by {who}" + (f": {data.reason}" if data.reason else "")
        if not loaded.execution.abort(reason, now=now):
            log.info("abort_of_finished_execution", execution_id=data.execution_id)
            return
        # The runner publishes the gate cancel, kills a running script (on the replica running it) and announces
        # the end: the abort's pending actions are part of the saved state.
        await self.repository.save(
            uow.conn,
            uow.outbox,
            loaded,
            now=now,
            runnable=True,
            traceparent=received.event.traceparent,
        )

    # ------------------------------------------------------------------------------------------------ gates

    async def _gate_step(self, uow: UnitOfWork, wire_key: wire.GateKey) -> tuple[Loaded, str] | None:
        """The execution and step path a gate is about, locked; None when it is not one of ours (other pipeline
        systems request gates on the same topics) or no longer waits for this attempt."""
        key = gate_key(wire_key)
        loaded = await self.repository.lock(uow.conn, key.execution)
        if loaded is None or loaded.row["pipeline_id"] != key.pipeline:
            return None
        path = loaded.execution.approval_step(key)
        return (loaded, path) if path is not None else None

    async def _gate_opened(self, uow: UnitOfWork, received: Received, data: wire.GateOpened) -> None:
        found = await self._gate_step(uow, data.key)
        if found is None:
            return
        loaded, path = found
        recorded = await self.repository.record_gate(
            uow.conn,
            execution_id=data.key.execution_id,
            step_path=path,
            attempt=data.key.attempt,
            gate_id=data.gate_id,
            token=data.token,
            message=data.message,
            opened_at=data.opened_at,
            expires_at=data.expires_at,
        )
        step = loaded.execution.step(path)
        if recorded and step.status == StepStatus.WAITING_APPROVAL:
            # The step now waits until the gate's expiry (plus a grace) for an outcome.
            loaded.execution.approval_opened(path, data.expires_at, now=self.clock.now())
            # Tell subscribers which gate the step waits on (the status itself did not change).
            loaded.before.pop(path, None)
            await self.repository.save(
                uow.conn,
                uow.outbox,
                loaded,
                now=self.clock.now(),
                runnable=False,
                gate_ids={path: data.gate_id},
                traceparent=received.event.traceparent,
            )

    async def _gate_closed(
        self,
        uow: UnitOfWork,
        received: Received,
        data: wire.GateApproved | wire.GateRejected | wire.GateExpired | wire.GateCancelled,
    ) -> None:
        found = await self._gate_step(uow, data.key)
        if found is None:
            return
        loaded, path = found
        execution, now = loaded.execution, self.clock.now()
        match data:
            case wire.GateApproved():
                approvers, comments = approved_by(data)
                changed = execution.approval_approved(path, data.inputs, approvers, comments, now=now)
            case wire.GateRejected():
                approvers, comment = rejected_by(data)
                changed = execution.approval_rejected(path, approvers, comment, now=now)
            case wire.GateExpired():
                changed = execution.approval_expired(path, now=now)
            case wire.GateCancelled():
                changed = execution.step_failed(path, f"the approval gate was cancelled: {data.reason}", now=now)
        if not changed:
            log.info(
                "late_gate_outcome_ignored", execution_id=data.key.execution_id, step=path, type=received.event.type
            )
            return
        await self.repository.save(
            uow.conn,
            uow.outbox,
            loaded,
            now=now,
            runnable=True,
            gate_ids={path: data.gate_id},
            traceparent=received.event.traceparent,
        )

    async def _request_refused(self, uow: UnitOfWork, received: Received, data: wire.RequestRefused) -> None:
        found = await self._gate_step(uow, data.key)
        if found is None:
            return
        loaded, path = found
        now = self.clock.now()
        if not loaded.execution.approval_refused(path, data.describe(), now=now):
            log.info("late_request_refusal_ignored", execution_id=data.key.execution_id, step=path)
            return
        await self.repository.save(
            uow.conn,
            uow.outbox,
            loaded,
            now=now,
            runnable=True,
            traceparent=received.event.traceparent,
        )

    async def gave_up(self, uow: UnitOfWork, received: Received, error: str) -> None:
        """A start request the executor keeps failing on is dead-lettered; it is recorded as refused, with an
        ExecutionFailed, so `signoff run --wait` and subscribers hear it instead of waiting (GivingUp)."""
        # The exception's type, not its text (it may quote SQL or values).
        why = f"the executor could not start it ({error.split(':', 1)[0]}); it is on the dead-letter topic"
        await self._record_refusal(uow, received, Refused("handler_error", why))

    # ------------------------------------------------------------------------------------------------ refusals

    def _refuse(self, uow: UnitOfWork, received: Received, refused: Refused) -> None:
        """Dead-letter the record with the reason (an outbox row, committed with the inbox row)."""
        record = received.record
        log.warning(
            "execution_request_refused", **received.log_context(), reason=refused.reason, error=refused.error[:500]
        )
        uow.outbox.add(
            dead_letter_record(
                record,
                id=dead_letter_id(record),
                topic=self.dead_letter_topic,
                reason=refused.reason,
                error=refused.error,
                consumer=self.consumer_name,
            )
        )

    async def _record_refusal(self, uow: UnitOfWork, received: Received, refused: Refused) -> None:
        data = received.event.data
        if not isinstance(data, wire.ExecutionRequested):
            return
        now: datetime = self.clock.now()
        await self.repository.record_refusal(
            uow.conn, data.execution_id, data.pipeline_id, refused.reason, refused.error, now
        )
        failed = wire.ExecutionFailed(
            execution_id=data.execution_id,
            pipeline_id=data.pipeline_id,
            cause=FailureCause.INVALID_PIPELINE,
            error=f"{refused.reason}: {refused.error}"[:4096],
            finished_at=now,
        )
        uow.outbox.add(outbox_record(failed, at=now, traceparent=received.event.traceparent))
