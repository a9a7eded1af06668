"""The execution state machine: pure, clock-free (time is passed in), serializable to a JSON dict.

Life of an execution (docs/pipelines.md, "Execution"):

* `Execution.start(...)` checks the start variables and queues every step of the plan.
* `next_actions(now)` is the command that moves the execution on: it returns what the service must do now (run a
  script, arm a wait timer, request an approval, cancel something, announce the end) and records the dispatched
  steps as RUNNING / WAITING_APPROVAL, so calling it again returns only new actions. Persist the state together
  with the actions (outbox) in one transaction.
* The service reports back with `step_succeeded`, `step_failed`, `approval_approved`, `approval_rejected`,
  `approval_expired`, `abort` and `tick(now)` (due waits and script deadlines). Reports that come too late (the
  step is no longer active, an older attempt, the execution is over) are ignored and return False; nonsense
  (unknown step, an approval outcome for a script) raises.
* Failure is fail-fast: one failed, rejected or expired step fails the pipeline; active siblings are cancelled
  (ABORTED), queued steps are SKIPPED. `abort` does the same with status ABORTED.

Restart rule (`recover(now)`, called once by an executor that takes an execution over after a restart): a
ShellScript step that was RUNNING has lost its process; it FAILS with reason "executor restarted while the step
was running", unless its spec sets `retryOnRestart: true`, in which case it is queued again as the next attempt
(at most `MAX_ATTEMPTS` attempts in all). A ShellScript step whose script never started (it was waiting for one
of the replica's script slots) lost nothing: it is queued again as the next attempt whatever `retryOnRestart`
says (within the same bound). A RUNNING Wait keeps its deadline and its timer is re-armed. A step WAITING_APPROVAL
needs nothing: its gate lives in the approval service, whose outcome event will arrive.

A step WAITING_APPROVAL still has a deadline, in case no answer ever comes (the request was lost or dead-lettered,
the approval service is gone): the gate's expiry plus `APPROVAL_ANSWER_GRACE` once GateOpened told it, before that
the step's own timeout (if it has one) plus the grace. Past it, `tick` fails the step with
`no answer from the approval service` and cancels the gate. A request the approval service refuses
(`approval_refused`) fails the step at once with the service's reasons.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from signoff.catalog import Catalog
from signoff.contracts.durations import format_duration, parse_positive_duration
from signoff.executor.domain.actions import (
    Action,
    ApprovalActivity,
    ApprovalMessage,
    ApprovalOutcome,
    ApprovalRequest,
    Approver,
    CancelApproval,
    CancelStep,
    ExecutionFinished,
    HistoryStage,
    HistoryStep,
    PipelineInfo,
    RequestApproval,
    RunShellScript,
    StageMetadata,
    StartWait,
    StepInfo,
    TriggeredBy,
)
from signoff.executor.domain.definitions import Definitions
from signoff.executor.domain.expressions import (
    Context,
    bind_script,
    render,
    render_marked,
)
from signoff.executor.domain.pipeline import (
    HarnessApprovalSpec,
    Pipeline,
    ShellScriptSpec,
    Stage,
    WaitSpec,
)
from signoff.executor.domain.plan import (
    Block,
    ParallelBlock,
    ParallelStageBlock,
    Plan,
    PlannedStage,
    PlannedStep,
    build_plan,
)
from signoff.executor.domain.scope import base_context, stage_context
from signoff.executor.domain.state import (
    ACTIVE,
    ExecutionState,
    ExecutionStatus,
    StepState,
    StepStatus,
)
from signoff.kernel import (
    ApprovalRule,
    ApproverInput,
    DecisionStatus,
    GateKey,
    GateStatus,
    InvalidDefinition,
    Policy,
)

MAX_ATTEMPTS = 3
"""Attempts of a script across executor restarts (`retryOnRestart`, or a script that never started), the first
included."""
RESTART_REASON = "executor restarted while the step was running"
NOT_STARTED_REASON = "executor restarted before the step's script started (it waited for a script slot)"

APPROVAL_ANSWER_GRACE = timedelta(minutes=15)
"""How long past a gate's expiry a step waits for the approval service's outcome before it fails."""
NO_APPROVAL_ANSWER = "no answer from the approval service"
"""The reason a step fails with when no outcome (nor refusal) arrived by its deadline."""


class InvalidStart(ValueError):
    """The execution cannot start with these variables; `problems` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot start the execution: " + "; ".join(problems))


class UnknownStep(KeyError):
    """No step with this path in the execution."""

    def __str__(self) -> str:
        return f"no step {self.args[0]!r} in this execution"


class InvalidTransition(ValueError):
    """A report that can never apply (e.g. an approval outcome for a script step)."""


class _DispatchFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ACTIONS = TypeAdapter(list[Action])


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


class Execution:
    """One run of a pipeline. Not thread-safe; one handler owns it at a time (the execution's Kafka key)."""

    def __init__(
        self, state: ExecutionState, pipeline: Pipeline, catalog: Catalog | None = None, plan: Plan | None = None
    ) -> None:
        self._state = state
        self.pipeline = pipeline
        self.plan: Plan = plan if plan is not None else build_plan(pipeline)
        self.catalog = catalog
        self._steps = {step.path: step for step in state.steps}
        planned = [step.path for step in self.plan.steps()]
        if planned != [step.path for step in state.steps]:
            raise ValueError("the execution's steps do not match its pipeline's plan")

    # -- construction and persistence --------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        pipeline: Pipeline,
        *,
        execution_id: str,
        sequence_id: int,
        triggered_by: TriggeredBy,
        now: datetime,
        variables: Mapping[str, Any] | None = None,
        catalog: Catalog | None = None,
        definitions: Definitions | None = None,
    ) -> Execution:
        """A new execution with every step QUEUED; raises `InvalidStart` for unknown, missing (`<+input>` without
        default), disallowed or mistyped variables. Call `next_actions(now)` next.

        `definitions`: where the pipeline and its plan are kept (`Definitions.add`), so that loading this execution
        finds the parse the caller validated instead of parsing the stored document again."""
        _check_now(now)
        if not pipeline.document:
            raise ValueError("the pipeline has no source document (parse it with parse_pipeline)")
        values = _start_variables(pipeline, dict(variables or {}))
        if definitions is not None:
            pipeline, plan = definitions.add(pipeline)
        else:
            plan = build_plan(pipeline)
        steps = [
            StepState(path=step.path, stage=step.stage, identifier=step.identifier, name=step.name, type=step.type)
            for step in plan.steps()
        ]
        state = ExecutionState(
            execution_id=execution_id,
            sequence_id=sequence_id,
            pipeline_identifier=pipeline.identifier,
            pipeline_document=copy.deepcopy(dict(pipeline.document)),
            triggered_by=triggered_by,
            variables=values,
            started_at=now,
            steps=steps,
        )
        return cls(state, pipeline, catalog, plan)

    def to_dict(self) -> dict[str, Any]:
        """The state as a JSON-ready dict."""
        return self._state.model_dump(mode="json")

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, catalog: Catalog | None = None, definitions: Definitions | None = None
    ) -> Execution:
        """Restore from `to_dict()` output. The pipeline comes from the stored document without catalog checks
        (a catalog edited since the start must not strand a running execution), through `definitions` when given:
        parsed and planned once per distinct document, not on every load."""
        state = ExecutionState.model_validate(data)
        source = f"execution {state.execution_id}"
        pipeline, plan = (definitions if definitions is not None else Definitions(capacity=1)).get(
            state.pipeline_document, source=source
        )
        return cls(state, pipeline, catalog, plan)

    # -- reading -----------------------------------------------------------------------------------------------

    @property
    def execution_id(self) -> str:
        return self._state.execution_id

    @property
    def status(self) -> ExecutionStatus:
        return self._state.status

    @property
    def reason(self) -> str | None:
        """Why the execution failed or was aborted."""
        return self._state.reason

    @property
    def started_at(self) -> datetime:
        return self._state.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._state.finished_at

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self._state.variables)

    def step(self, path: str) -> StepState:
        """A copy of one step's state."""
        return self._get(path).model_copy(deep=True)

    def running_scripts(self) -> list[str]:
        """Paths of the ShellScript steps that run now (a process exists, or should)."""
        return [s.path for s in self._state.steps if s.type == "ShellScript" and s.status == StepStatus.RUNNING]

    def approval_step(self, key: GateKey) -> str | None:
        """The path of the approval step a gate is about, when this execution is the gate's and the step is at the
        gate's attempt; else None (an earlier attempt's gate, or another pipeline system's)."""
        if key.execution != self.execution_id or key.pipeline != self.pipeline.identifier:
            return None
        for state in self._state.steps:
            if state.stage == key.stage and state.identifier == key.step and state.type == "HarnessApproval":
                return state.path if state.attempt == key.attempt else None
        return None

    def steps(self) -> list[StepState]:
        """Copies of every step's state, in plan order."""
        return [step.model_copy(deep=True) for step in self._state.steps]

    def waiting_approvals(self) -> list[str]:
        """Paths of the steps waiting for an approval."""
        return [step.path for step in self._state.steps if step.status == StepStatus.WAITING_APPROVAL]

    def stage_status(self, identifier: str) -> StepStatus:
        """A stage's status derived from its steps (QUEUED, RUNNING, WAITING_APPROVAL, SUCCEEDED, a failure status,
        ABORTED or SKIPPED)."""
        statuses = [self._steps[step.path].status for step in self.plan.stage(identifier).steps()]
        for status in (StepStatus.QUEUED, StepStatus.SKIPPED, StepStatus.SUCCEEDED):
            if all(s == status for s in statuses):
                return status
        for status in (StepStatus.FAILED, StepStatus.APPROVAL_REJECTED, StepStatus.EXPIRED, StepStatus.ABORTED):
            if status in statuses:
                return status
        if StepStatus.WAITING_APPROVAL in statuses:
            return StepStatus.WAITING_APPROVAL
        return StepStatus.RUNNING

    def next_wakeup(self) -> datetime | None:
        """The earliest deadline of a running script, a wait, or an approval that got no answer: call `tick` then."""
        deadlines = [
            step.deadline
            for step in self._state.steps
            if step.status in (StepStatus.RUNNING, StepStatus.WAITING_APPROVAL) and step.deadline is not None
        ]
        return min(deadlines, default=None)

    # -- the command -------------------------------------------------------------------------------------------

    def next_actions(self, now: datetime) -> list[Action]:
        """Actions to carry out now: pending cancellations / end notices first, then the steps that became ready,
        which are recorded as dispatched. A step whose inputs cannot be resolved (an unresolved expression in a
        script, a bad timeout) fails here instead of being dispatched."""
        _check_now(now)
        dispatched: list[Action] = []
        if self._state.status == ExecutionStatus.RUNNING:
            prepared: list[tuple[StepState, Action, StepStatus, datetime | None]] = []
            failure: tuple[StepState, str] | None = None
            for planned in self._ready():
                state = self._steps[planned.path]
                try:
                    action, status, deadline = self._prepare(planned, state, now)
                except _DispatchFailed as exc:
                    failure = (state, exc.reason)
                    break
                prepared.append((state, action, status, deadline))
            if failure is not None:
                state, reason = failure
                state.started_at = now
                self._finish_step(state, StepStatus.FAILED, now, reason)
                self._fail(now, f"step {state.path} failed: {reason}", ExecutionStatus.FAILED)
            else:
                for state, action, status, deadline in prepared:
                    state.status = status
                    state.started_at = now
                    state.deadline = deadline
                    state.reason = None
                    dispatched.append(action)
        actions = [*self._state.pending_actions, *dispatched]
        self._state.pending_actions = []
        return actions

    # -- transitions -------------------------------------------------------------------------------------------

    def step_succeeded(
        self, path: str, outputs: Mapping[str, Any] | None = None, *, now: datetime, attempt: int | None = None
    ) -> bool:
        """A script finished with exit code 0 (`outputs`: output variable -> value; undeclared names are dropped),
        or a wait's timer fired."""
        _check_now(now)
        state = self._get(path, ("ShellScript", "Wait"), "step_succeeded")
        if not self._live(state, attempt, {StepStatus.RUNNING}):
            return False
        spec = self.plan.step(path).step.spec
        if isinstance(spec, ShellScriptSpec):
            declared = {variable.name for variable in spec.output_variables}
            state.outputs = {name: str(value) for name, value in (outputs or {}).items() if name in declared}
        self._finish_step(state, StepStatus.SUCCEEDED, now)
        self._settle(now)
        return True

    def step_failed(self, path: str, reason: str, *, now: datetime, attempt: int | None = None) -> bool:
        """A step failed (non-zero exit, could not start; for an approval step: the request was refused)."""
        _check_now(now)
        state = self._get(path)
        if not self._live(state, attempt, ACTIVE):
            return False
        self._finish_step(state, StepStatus.FAILED, now, reason)
        self._fail(now, f"step {path} failed: {reason}", ExecutionStatus.FAILED)
        return True

    def approval_approved(
        self,
        path: str,
        inputs: Mapping[str, Any] | None = None,
        approvers: Iterable[ApprovalActivity | Approver] = (),
        comments: str | None = None,
        *,
        now: datetime,
    ) -> bool:
        """The gate was approved. `inputs` are the final approver inputs; declared inputs missing from it take
        their (rendered) default; undeclared names are dropped. `approvers`: an activity per vote, each with its
        own comment and time (what `mapping.approved_by` reads from the outcome event), or bare approvers, who get
        `comments` and `now`."""
        _check_now(now)
        state = self._get(path, ("HarnessApproval",), "approval_approved")
        if not self._live(state, None, {StepStatus.WAITING_APPROVAL}):
            return False
        planned = self.plan.step(path)
        spec: HarnessApprovalSpec = planned.step.spec
        ctx = self.context_for(path)
        given = dict(inputs or {})
        final = {
            item.name: str(given[item.name]) if item.name in given else render(item.default_value, ctx).text
            for item in spec.approver_inputs
        }
        state.approval = ApprovalOutcome(
            action=GateStatus.APPROVED,
            activities=_activities(approvers, DecisionStatus.APPROVE, comments, now),
            inputs=final,
            decided_at=now,
        )
        self._finish_step(state, StepStatus.SUCCEEDED, now)
        self._settle(now)
        return True

    def approval_rejected(
        self,
        path: str,
        approvers: Iterable[ApprovalActivity | Approver] = (),
        comments: str | None = None,
        *,
        now: datetime,
    ) -> bool:
        """The gate was rejected: the step is APPROVAL_REJECTED and the pipeline fails. `approvers` as for
        `approval_approved`; `comments` is also what the step's reason says."""
        _check_now(now)
        state = self._get(path, ("HarnessApproval",), "approval_rejected")
        if not self._live(state, None, {StepStatus.WAITING_APPROVAL}):
            return False
        activities = _activities(approvers, DecisionStatus.REJECT, comments, now)
        state.approval = ApprovalOutcome(action=GateStatus.REJECTED, activities=activities, decided_at=now)
        # Nobody is named when no person rejected it (its timeout action, a newer gate): `comments` says what did.
        who = ", ".join(activity.approver.name for activity in activities)
        reason = (f"rejected by {who}" if who else "rejected") + (f": {comments}" if comments else "")
        self._finish_step(state, StepStatus.APPROVAL_REJECTED, now, reason)
        self._fail(now, f"approval {path} was {reason}", ExecutionStatus.FAILED)
        return True

    def approval_expired(self, path: str, *, now: datetime) -> bool:
        """The gate timed out without a decision: the step is EXPIRED and the pipeline fails."""
        _check_now(now)
        state = self._get(path, ("HarnessApproval",), "approval_expired")
        if not self._live(state, None, {StepStatus.WAITING_APPROVAL}):
            return False
        state.approval = ApprovalOutcome(action=GateStatus.EXPIRED, decided_at=now)
        self._finish_step(state, StepStatus.EXPIRED, now, "the approval timed out")
        self._fail(now, f"approval {path} expired", ExecutionStatus.FAILED)
        return True

    def approval_opened(self, path: str, expires_at: datetime, *, now: datetime) -> bool:
        """The approval service opened the gate, expiring at `expires_at`: the step waits until then plus
        `APPROVAL_ANSWER_GRACE` for an outcome. Returns True when the deadline changed."""
        _check_now(now)
        state = self._get(path, ("HarnessApproval",), "approval_opened")
        if not self._live(state, None, {StepStatus.WAITING_APPROVAL}):
            return False
        deadline = expires_at + APPROVAL_ANSWER_GRACE
        if state.deadline == deadline:
            return False
        state.deadline = deadline
        return True

    def approval_refused(self, path: str, reasons: str, *, now: datetime) -> bool:
        """The approval service cannot serve the request (`reasons` by field): the step fails at once."""
        _check_now(now)
        state = self._get(path, ("HarnessApproval",), "approval_refused")
        if not self._live(state, None, {StepStatus.WAITING_APPROVAL}):
            return False
        reason = f"the approval service refused the request: {reasons}"
        self._finish_step(state, StepStatus.FAILED, now, reason)
        self._fail(now, f"step {path} failed: {reason}", ExecutionStatus.FAILED)
        return True

    def abort(self, reason: str = "aborted", *, now: datetime) -> bool:
        """Stop the execution: active steps are cancelled (ABORTED), queued ones SKIPPED, status ABORTED."""
        _check_now(now)
        if self._state.status != ExecutionStatus.RUNNING:
            return False
        self._fail(now, reason, ExecutionStatus.ABORTED)
        return True

    def tick(self, now: datetime) -> bool:
        """Apply the clock: waits whose time has come succeed; scripts past their deadline fail ("timed out
        after ...") and are cancelled. Returns True when something changed."""
        _check_now(now)
        changed = False
        for state in self._state.steps:
            if self._state.status != ExecutionStatus.RUNNING:
                break
            if state.deadline is None or state.deadline > now:
                continue
            if state.status == StepStatus.WAITING_APPROVAL:
                changed = True
                reason = NO_APPROVAL_ANSWER
                self._state.pending_actions.append(
                    CancelApproval(
                        execution_id=self.execution_id, step_path=state.path, attempt=state.attempt, reason=reason
                    )
                )
                self._finish_step(state, StepStatus.FAILED, now, reason)
                self._fail(now, f"step {state.path} failed: {reason}", ExecutionStatus.FAILED)
                continue
            if state.status != StepStatus.RUNNING:
                continue
            changed = True
            if state.type == "Wait":
                self._finish_step(state, StepStatus.SUCCEEDED, now)
                continue
            timeout = state.deadline - state.started_at if state.started_at else None
            reason = f"timed out after {format_duration(timeout)}" if timeout else "timed out"
            self._state.pending_actions.append(
                CancelStep(execution_id=self.execution_id, step_path=state.path, attempt=state.attempt, reason=reason)
            )
            self._finish_step(state, StepStatus.FAILED, now, reason)
            self._fail(now, f"step {state.path} failed: {reason}", ExecutionStatus.FAILED)
        self._settle(now)
        return changed

    def recover(self, now: datetime, never_started: Collection[str] = ()) -> None:
        """Apply the restart rule (module docstring) after loading an execution whose executor restarted;
        `never_started`: the paths of RUNNING script steps whose script is known not to have started."""
        _check_now(now)
        for state in self._state.steps:
            if self._state.status != ExecutionStatus.RUNNING:
                return
            if state.status != StepStatus.RUNNING:
                continue
            spec = self.plan.step(state.path).step.spec
            if isinstance(spec, WaitSpec):
                assert state.deadline is not None and state.started_at is not None
                self._state.pending_actions.append(
                    StartWait(
                        execution_id=self.execution_id,
                        step_path=state.path,
                        attempt=state.attempt,
                        duration=state.deadline - state.started_at,
                        until=state.deadline,
                    )
                )
            else:
                never_ran = isinstance(spec, ShellScriptSpec) and state.path in never_started
                retried = never_ran or (isinstance(spec, ShellScriptSpec) and spec.retry_on_restart)
                if retried and state.attempt < MAX_ATTEMPTS:
                    state.status = StepStatus.QUEUED
                    state.attempt += 1
                    state.started_at = state.deadline = None
                    state.reason = (
                        f"queued again: {NOT_STARTED_REASON}"
                        if never_ran
                        else f"queued again (retryOnRestart): {RESTART_REASON}"
                    )
                    continue
                reason = RESTART_REASON
                if never_ran:
                    reason = f"{NOT_STARTED_REASON} (gave up after {state.attempt} attempts)"
                elif retried:
                    reason += f" (retryOnRestart: gave up after {state.attempt} attempts)"
                self._finish_step(state, StepStatus.FAILED, now, reason)
                self._fail(now, f"step {state.path} failed: {reason}", ExecutionStatus.FAILED)

    # -- expressions and metadata (signoff.executor.domain.scope) -------------------------------------------------

    def context_for(self, path: str) -> Context:
        """The expression context of a step: pipeline, outputs of steps that ran, its stage and the stage's
        service / environment / infrastructure / artifact scopes."""
        planned = self.plan.step(path) if path in self._steps else None
        if planned is None:
            raise UnknownStep(path)
        stage = self.plan.stage(planned.stage).stage
        ctx, _ = self._stage_context(self._base_context(), stage)
        return ctx

    def stage_metadata(self, identifier: str) -> StageMetadata:
        """A stage's CD metadata resolved as far as the execution has come."""
        stage = self.plan.stage(identifier).stage
        _, metadata = self._stage_context(self._base_context(), stage)
        return metadata

    def _base_context(self) -> Context:
        return base_context(self.pipeline, self.plan, self._state)

    def _stage_context(self, base: Context, stage: Stage) -> tuple[Context, StageMetadata]:
        return stage_context(base, stage, self.stage_status(stage.identifier), self.catalog)

    # -- dispatch ----------------------------------------------------------------------------------------------

    def _prepare(
        self, planned: PlannedStep, state: StepState, now: datetime
    ) -> tuple[Action, StepStatus, datetime | None]:
        ctx = self.context_for(planned.path)
        spec = planned.step.spec
        stage_steps = self.plan.stage(planned.stage).steps()
        if all(self._steps[step.path].status == StepStatus.QUEUED for step in stage_steps):
            # The stage starts now: its targets are chosen now, and a filter that keeps nothing (or still cannot
            # be applied) fails it instead of deploying nowhere.
            problems = self.stage_metadata(planned.stage).target_problems
            if problems:
                raise _DispatchFailed("the stage's targets cannot be chosen: " + "; ".join(problems))
        if isinstance(spec, ShellScriptSpec):
            # Expression values reach the script as data (environment variables it references), never as code.
            script = bind_script(spec.script, ctx)
            environment = {variable.name: render(variable.value, ctx) for variable in spec.environment_variables}
            missing = [script.as_rendered(), *environment.values()]
            if any(item.unresolved for item in missing):
                detail = "; ".join(item.describe_unresolved() for item in missing if item.unresolved)
                raise _DispatchFailed(f"unresolved expressions: {detail}")
            timeout = self._duration(planned.step.effective_timeout or "10m", ctx, "timeout")
            action: Action = RunShellScript(
                execution_id=self.execution_id,
                step_path=planned.path,
                attempt=state.attempt,
                step_name=planned.name,
                script=script.text,
                environment={name: rendered.text for name, rendered in environment.items()} | script.values,
                output_variables={item.name: item.shell_variable for item in spec.output_variables},
                timeout=timeout,
                deadline=now + timeout,
            )
            return action, StepStatus.RUNNING, now + timeout
        if isinstance(spec, WaitSpec):
            duration = self._duration(spec.duration, ctx, "duration")
            action = StartWait(
                execution_id=self.execution_id,
                step_path=planned.path,
                attempt=state.attempt,
                duration=duration,
                until=now + duration,
            )
            return action, StepStatus.RUNNING, now + duration
        request = self._approval_request(planned, state, ctx, now)
        action = RequestApproval(
            execution_id=self.execution_id, step_path=planned.path, attempt=state.attempt, request=request
        )
        # Until GateOpened says when the gate expires, the step's own timeout (if any) bounds the wait.
        return action, StepStatus.WAITING_APPROVAL, (request.expires_at or now) + APPROVAL_ANSWER_GRACE

    @staticmethod
    def _duration(text: str, ctx: Context, what: str) -> timedelta:
        rendered = render(text, ctx)
        if rendered.unresolved:
            raise _DispatchFailed(f"{what} {text!r} cannot be resolved: {rendered.describe_unresolved()}")
        try:
            return parse_positive_duration(rendered.text)
        except ValueError as exc:
            raise _DispatchFailed(f"{what}: {exc}") from None

    def _approval_request(self, planned: PlannedStep, state: StepState, ctx: Context, now: datetime) -> ApprovalRequest:
        spec: HarnessApprovalSpec = planned.step.spec
        # No timeout on the step: the approval service's default applies (SIGNOFF_DEFAULT_TIMEOUT).
        given = planned.step.effective_timeout
        timeout = self._duration(given, ctx, "timeout") if given else None

        def names(values: tuple[str, ...], what: str) -> tuple[str, ...]:
            out = []
            for value in values:
                rendered = render(value, ctx)
                if rendered.unresolved:
                    raise _DispatchFailed(f"{what} {value!r} cannot be resolved: {rendered.describe_unresolved()}")
                out.append(rendered.text)
            return tuple(out)

        approvers = spec.approvers
        # The Harness approvers block becomes the shared policy here, the top-level names rendered: the one
        # conversion; the mapping writes it to the wire as is.
        written = [
            (names(groups, "user group"), names(users, "user"), count) if not where else (groups, users, count)
            for where, groups, users, count in approvers.written_rules()
        ]
        try:
            policy = Policy(
                rules=tuple(
                    ApprovalRule(user_groups=groups, users=users, minimum_count=count)
                    for groups, users, count in written
                ),
                disallow_pipeline_executor=approvers.disallow_pipeline_executor,
            )
            inputs = tuple(
                ApproverInput(
                    name=item.name,
                    default_value=render(item.default_value, ctx).text or None,
                    required=item.required,
                    allowed_values=item.allowed_values or None,
                )
                for item in spec.approver_inputs
            )
        except InvalidDefinition as exc:
            raise _DispatchFailed(str(exc)) from None
        text = render(spec.approval_message, ctx)
        marked = render_marked(spec.approval_message, ctx)
        stage = self.plan.stage(planned.stage)
        upcoming = [
            self.stage_metadata(other.identifier)
            for other in self.plan.stages()
            if other.identifier != stage.identifier and self.stage_status(other.identifier) == StepStatus.QUEUED
        ]
        return ApprovalRequest(
            pipeline=PipelineInfo(
                identifier=self.pipeline.identifier,
                name=self.pipeline.name,
                execution_id=self.execution_id,
                sequence_id=self._state.sequence_id,
                triggered_by=self._state.triggered_by,
                started_at=self._state.started_at,
            ),
            step=StepInfo(
                path=planned.path,
                stage_identifier=stage.identifier,
                stage_name=stage.name,
                identifier=planned.identifier,
                name=planned.name,
                attempt=state.attempt,
            ),
            message=ApprovalMessage(
                template=spec.approval_message,
                text=text.text,
                marked=marked.text,
                unresolved=tuple(text.unresolved),
                reasons=text.reasons,
            ),
            include_pipeline_execution_history=spec.include_pipeline_execution_history,
            history=self._history(exclude=planned.path) if spec.include_pipeline_execution_history else (),
            current_stage=self.stage_metadata(stage.identifier),
            upcoming_stages=tuple(upcoming),
            policy=policy,
            timeout_action=spec.kernel_timeout_action,
            auto_reject_previous_approvals=spec.auto_reject_previous,
            inputs=inputs,
            timeout=timeout,
            requested_at=now,
            expires_at=now + timeout if timeout is not None else None,
        )

    def _history(self, exclude: str) -> tuple[HistoryStage, ...]:
        stages: list[HistoryStage] = []
        for planned_stage in self.plan.stages():
            steps = []
            for planned in planned_stage.steps():
                state = self._steps[planned.path]
                if planned.path == exclude or state.status == StepStatus.QUEUED:
                    continue
                steps.append(
                    HistoryStep(
                        path=state.path,
                        identifier=state.identifier,
                        name=state.name,
                        type=state.type,
                        status=state.status.value,
                        started_at=state.started_at,
                        finished_at=state.finished_at,
                        reason=state.reason,
                        approval=state.approval,
                    )
                )
            if steps:
                stages.append(
                    HistoryStage(
                        identifier=planned_stage.identifier,
                        name=planned_stage.name,
                        type=planned_stage.stage.type,
                        status=self.stage_status(planned_stage.identifier).value,
                        steps=tuple(steps),
                    )
                )
        return tuple(stages)

    # -- internals ---------------------------------------------------------------------------------------------

    def _get(self, path: str, types: tuple[str, ...] | None = None, method: str = "") -> StepState:
        try:
            state = self._steps[path]
        except KeyError:
            raise UnknownStep(path) from None
        if types is not None and state.type not in types:
            raise InvalidTransition(f"{method} does not apply to {state.type} step {path!r}")
        return state

    def _live(self, state: StepState, attempt: int | None, statuses: Iterable[StepStatus]) -> bool:
        # Late, duplicate or stale reports are normal in an event-driven system: they are ignored, not errors.
        return (
            self._state.status == ExecutionStatus.RUNNING
            and state.status in set(statuses)
            and (attempt is None or attempt == state.attempt)
        )

    @staticmethod
    def _finish_step(state: StepState, status: StepStatus, now: datetime, reason: str | None = None) -> None:
        state.status = status
        state.finished_at = now
        state.reason = reason

    def _fail(self, now: datetime, reason: str, status: ExecutionStatus) -> None:
        for state in self._state.steps:
            if state.status in ACTIVE:
                cancel_reason = f"cancelled: {reason}"
                cls = CancelApproval if state.status == StepStatus.WAITING_APPROVAL else CancelStep
                self._state.pending_actions.append(
                    cls(
                        execution_id=self.execution_id,
                        step_path=state.path,
                        attempt=state.attempt,
                        reason=cancel_reason,
                    )
                )
                self._finish_step(state, StepStatus.ABORTED, now, cancel_reason)
            elif state.status == StepStatus.QUEUED:
                self._finish_step(state, StepStatus.SKIPPED, now, f"not run: {reason}")
        self._end(now, status, reason)

    def _settle(self, now: datetime) -> None:
        if self._state.status == ExecutionStatus.RUNNING and all(
            state.status == StepStatus.SUCCEEDED for state in self._state.steps
        ):
            self._end(now, ExecutionStatus.SUCCEEDED, None)

    def _end(self, now: datetime, status: ExecutionStatus, reason: str | None) -> None:
        self._state.status = status
        self._state.reason = reason
        self._state.finished_at = now
        self._state.pending_actions.append(
            ExecutionFinished(execution_id=self.execution_id, status=status.value, reason=reason, finished_at=now)
        )

    def _ready(self) -> list[PlannedStep]:
        _, ready = self._sequence(self.plan.items)
        return ready

    def _sequence(self, blocks: Iterable[Any]) -> tuple[bool, list[PlannedStep]]:
        # A sequence runs its blocks one after the other: the first unfinished block decides what is ready.
        for block in blocks:
            done, ready = self._block(block)
            if not done:
                return False, ready
        return True, []

    def _block(self, block: Block | PlannedStage | ParallelStageBlock) -> tuple[bool, list[PlannedStep]]:
        if isinstance(block, PlannedStep):
            status = self._steps[block.path].status
            if status == StepStatus.SUCCEEDED:
                return True, []
            return False, [block] if status == StepStatus.QUEUED else []
        if isinstance(block, PlannedStage):
            return self._sequence(block.blocks)
        lanes: list[tuple[Any, ...]] = (
            list(block.lanes) if isinstance(block, ParallelBlock) else [(stage,) for stage in block.stages]
        )
        done = True
        ready: list[PlannedStep] = []
        for lane in lanes:
            lane_done, lane_ready = self._sequence(lane)
            done = done and lane_done
            ready.extend(lane_ready)
        return done, ready


def _activities(
    approvers: Iterable[ApprovalActivity | Approver], action: DecisionStatus, comments: str | None, now: datetime
) -> tuple[ApprovalActivity, ...]:
    """The activities of an outcome: an activity (a vote as the outcome event carried it) is kept as it is, with
    its own comment and time; a bare approver decided `action` with `comments` at `now`."""
    return tuple(
        approver
        if isinstance(approver, ApprovalActivity)
        else ApprovalActivity(approver=approver, action=action, comments=comments, decided_at=now)
        for approver in approvers
    )


def _start_variables(pipeline: Pipeline, supplied: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    declared = {variable.name: variable for variable in pipeline.variables}
    for name in sorted(set(supplied) - set(declared)):
        problems.append(f"unknown pipeline variable {name!r}")
    values: dict[str, Any] = {}
    for variable in pipeline.variables:
        name = variable.name
        if variable.type == "Secret":
            if name in supplied:
                problems.append(f"secret variable {name!r} cannot be supplied (signoff stores no secrets)")
            values[name] = None
            continue
        runtime = variable.runtime_input
        if name in supplied:
            value = supplied[name]
        elif runtime is not None:
            if runtime.default is None:
                problems.append(f"pipeline variable {name!r} is a runtime input (<+input>): supply a value")
                continue
            value = runtime.default
        else:
            value = variable.value
        if runtime is not None and runtime.allowed_values and str(value) not in runtime.allowed_values:
            problems.append(f"pipeline variable {name!r}: {value!r} is not one of {', '.join(runtime.allowed_values)}")
        if variable.type == "Number" and value is not None:
            number = _number(value)
            if number is None:
                problems.append(f"pipeline variable {name!r} must be a number, got {value!r}")
            value = number
        if variable.required and value in (None, ""):
            problems.append(f"pipeline variable {name!r} is required")
        if value is not None and not isinstance(value, str | int | float | bool):
            problems.append(f"pipeline variable {name!r} must be text or a number")
        values[name] = value
    if problems:
        raise InvalidStart(problems)
    return values


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return int(str(value))
    except ValueError:
        pass
    try:
        return float(str(value))
    except ValueError:
        return None


__all__ = [
    "MAX_ATTEMPTS",
    "RESTART_REASON",
    "Execution",
    "InvalidStart",
    "InvalidTransition",
    "UnknownStep",
]
