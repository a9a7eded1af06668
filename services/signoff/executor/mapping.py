"""Between the executor's domain and the wire contract: gate keys and outcomes, approval requests, execution lifecycle
events, outbox rows. The one module where the executor converts: a value crosses here once, in one direction.

The domain speaks the shared kernel (`signoff.kernel`: policy, approver inputs, decision status, gate key) and
Harness (step statuses in capitals); the wire speaks the contract (`signoff.contracts`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from signoff import contracts as wire
from signoff.catalog import Resolved, ResolvedRef
from signoff.contracts.durations import format_duration
from signoff.contracts.events import (
    Artifact,
    EnvironmentRef,
    FailureCause,
    FilterEntity,
    FilterMatchType,
    FilterType,
    HistoryEntry,
    Message,
    RejectionCause,
    RunStatus,
    StageMetadata,
    TargetFilter,
    TimeoutAction,
)
from signoff.contracts.events import DecisionStatus as WireStatus
from signoff.executor.domain.actions import (
    ApprovalActivity,
    ApprovalRequest,
    Approver,
    ExecutionFinished,
    FilterMetadata,
)
from signoff.executor.domain.actions import StageMetadata as DomainStageMetadata
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.state import StepState, StepStatus
from signoff.kernel import DecisionStatus, GateKey
from signoff.runtime.outbox import OutboxRecord, event_record

EVENT_SOURCE = "urn:signoff:executor"

RUN_STATUS: Mapping[str, RunStatus] = {
    StepStatus.QUEUED: RunStatus.QUEUED,
    StepStatus.RUNNING: RunStatus.RUNNING,
    StepStatus.WAITING_APPROVAL: RunStatus.WAITING,
    StepStatus.SUCCEEDED: RunStatus.SUCCEEDED,
    StepStatus.FAILED: RunStatus.FAILED,
    StepStatus.APPROVAL_REJECTED: RunStatus.FAILED,
    StepStatus.EXPIRED: RunStatus.EXPIRED,
    StepStatus.ABORTED: RunStatus.ABORTED,
    StepStatus.SKIPPED: RunStatus.SKIPPED,
}
_DECISION_STATUS = {
    WireStatus.APPROVED: DecisionStatus.APPROVE,
    WireStatus.REJECTED: DecisionStatus.REJECT,
}


def outbox_record(data: wire.EventData, *, at: datetime, traceparent: str | None = None) -> OutboxRecord:
    """The outbox row publishing `data` from this service."""
    return event_record(data, source=EVENT_SOURCE, at=at, traceparent=traceparent)


# ---------------------------------------------------------------------------------------------------- gates


def gate_key(key: wire.GateKey) -> GateKey:
    """The domain's key of a gate the wire names."""
    return GateKey(key.pipeline_id, key.execution_id, key.stage_id, key.step_id, key.attempt)


def _activity(vote: wire.Vote, *, comment: str | None = None) -> ApprovalActivity:
    """One vote as the approval activity `<+...output.approvalActivities[n]>` reads: its approver, its decision,
    its own comment (`comment` when the event says it more fully) and the time the approver decided. `.user.email`
    is the one the gate's directory snapshot lists (unknown when it lists none)."""
    return ApprovalActivity(
        approver=Approver(name=vote.approver, email=vote.approver_email),
        action=_DECISION_STATUS[vote.status],
        comments=(comment or vote.comment) or None,
        decided_at=vote.decided_at,
    )


def approved_by(data: wire.GateApproved) -> tuple[list[ApprovalActivity], str | None]:
    """What approved an approved gate: an activity per approving vote, in order, each with its own comment and
    time; and the outcome's own comment, which an approval has none of (each activity carries its voter's)."""
    approving = [vote for vote in data.votes if _DECISION_STATUS[vote.status] is DecisionStatus.APPROVE]
    return [_activity(vote) for vote in approving], None


def rejected_by(data: wire.GateRejected) -> tuple[list[ApprovalActivity], str | None]:
    """Who rejected a rejected gate (nobody when its timeout action or a newer gate did), as an activity with the
    vote's own time, and the comment: theirs, or what rejected it."""
    activities: list[ApprovalActivity] = []
    if data.rejected_by:
        vote = next(
            (
                vote
                for vote in reversed(data.votes)
                if vote.approver == data.rejected_by and _DECISION_STATUS[vote.status] is DecisionStatus.REJECT
            ),
            None,
        )
        if vote is not None:
            activities.append(_activity(vote, comment=data.comment))
        else:  # the event names the rejecter without their vote: the gate's rejection is when they decided
            activities.append(
                ApprovalActivity(
                    approver=Approver(name=data.rejected_by),
                    action=DecisionStatus.REJECT,
                    comments=data.comment or None,
                    decided_at=data.rejected_at,
                )
            )
    if data.comment:
        return activities, data.comment
    if activities and activities[0].comments:
        return activities, activities[0].comments
    if data.cause == RejectionCause.TIMEOUT_ACTION:
        return activities, "the timeout action rejected it"
    if data.cause == RejectionCause.SUPERSEDED:
        return activities, f"superseded by gate {data.superseded_by}"
    return activities, None


# ---------------------------------------------------------------------------------------------------- approvals


def _ref(ref: ResolvedRef) -> str:
    """A catalog identifier when resolved; else the ref as written (an expression stays visible, never blank)."""
    return ref.identifier if isinstance(ref, Resolved) else ref.raw


def target_filter(metadata: FilterMetadata) -> TargetFilter:
    """The wire form of a filter as applied (an unresolved one keeps its expressions and says why)."""
    return TargetFilter(
        type=FilterType(metadata.type),
        entities=[FilterEntity(entity) for entity in metadata.entities],
        match_type=FilterMatchType(metadata.match_type) if metadata.match_type else None,
        tags=dict(metadata.tags),
        tags_expression=metadata.tags_expression if metadata.unresolved else None,
        unresolved_reason=metadata.unresolved[:4096] if metadata.unresolved else None,
    )


def stage_metadata(metadata: DomainStageMetadata) -> StageMetadata:
    """The wire form of a stage's CD metadata."""
    environments = []
    for target in metadata.environments:
        env = target.environment
        env_type = getattr(env.entity, "type", None) if isinstance(env, Resolved) else None
        environments.append(
            EnvironmentRef(
                ref=_ref(env),
                type=env_type,
                infrastructure_refs=[_ref(item) for item in target.infrastructures],
                gitops_cluster_refs=[_ref(item) for item in target.gitops_clusters],
                filters=[target_filter(item) for item in target.filters],
            )
        )
    service_ref = _ref(metadata.services[0]) if len(metadata.services) == 1 else None
    return StageMetadata(
        identifier=metadata.identifier,
        name=metadata.name,
        type=metadata.type,
        service_refs=[_ref(item) for item in metadata.services],
        environment_group_ref=_ref(metadata.environment_group) if metadata.environment_group else None,
        environments=environments,
        environment_filters=[target_filter(item) for item in metadata.environment_filters],
        artifacts=[
            Artifact(service_ref=service_ref, image=artifact.image, tag=artifact.tag or None)
            for artifact in metadata.artifacts
            if artifact.image
        ],
        custom_metadata=dict(metadata.custom_metadata),
    )


def _history(request: ApprovalRequest) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    for stage in request.history:
        # A stage's times are its steps': it started with its first, and (once it is over) ended with its last.
        status = RUN_STATUS[StepStatus(stage.status)]
        started = [step.started_at for step in stage.steps if step.started_at is not None]
        finished = [step.finished_at for step in stage.steps if step.finished_at is not None]
        over = status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
        entries.append(
            HistoryEntry(
                stage_id=stage.identifier,
                stage_name=stage.name,
                status=status,
                started_at=min(started) if started else None,
                ended_at=max(finished) if over and finished else None,
            )
        )
        for step in stage.steps:
            entries.append(
                HistoryEntry(
                    stage_id=stage.identifier,
                    stage_name=stage.name,
                    step_id=step.identifier,
                    step_name=step.name,
                    status=RUN_STATUS[StepStatus(step.status)],
                    started_at=step.started_at,
                    ended_at=step.finished_at,
                )
            )
    return entries


MESSAGE_MAX = next(m.max_length for m in Message.__metadata__ if getattr(m, "max_length", None))
"""The longest approval message the wire carries (`Message`)."""


def fitting_message(text: str) -> str:
    """`text` if the wire can carry it, else cut to fit and marked as cut: a message that only grows past the limit
    once its expressions are resolved must not fail the run halfway (a written one over it is refused by `run`)."""
    if len(text) <= MESSAGE_MAX:
        return text
    mark = f"\n[…] (cut: the message is over {MESSAGE_MAX} characters)"
    return text[: MESSAGE_MAX - len(mark)] + mark


def approval_requested(request: ApprovalRequest, triggered_by: wire.Person) -> wire.ApprovalRequested:
    """The wire request for an approval step the execution reached. `triggered_by` is the execution's requester as
    the contract knows them (user id first: `disallowPipelineExecutor` compares user ids)."""
    # The kernel policy holds every rule; the wire's top-level approvers are its first, `rules` the others. A policy
    # of rules only (the Harness block named nobody) reads the same way: the approval service checks all_rules().
    top, *others = request.policy.rules
    return wire.ApprovalRequested(
        key=wire.GateKey(
            pipeline_id=request.pipeline.identifier,
            execution_id=request.pipeline.execution_id,
            stage_id=request.step.stage_identifier,
            step_id=request.step.identifier,
            attempt=request.step.attempt,
        ),
        pipeline_name=request.pipeline.name,
        stage_name=request.step.stage_name,
        step_name=request.step.name,
        triggered_by=triggered_by,
        policy=wire.ApprovalPolicy(
            user_groups=list(top.user_groups),
            users=list(top.users),
            minimum_count=top.minimum_count,
            disallow_pipeline_executor=request.policy.disallow_pipeline_executor,
            rules=[
                wire.ApprovalRule(
                    user_groups=list(rule.user_groups), users=list(rule.users), minimum_count=rule.minimum_count
                )
                for rule in others
            ],
        ),
        approver_inputs=[
            wire.ApproverInput(
                name=item.name,
                default_value=item.default_value or "",
                required=item.required,
                allowed_values=list(item.allowed_values or ()),
            )
            for item in request.inputs
        ],
        timeout=format_duration(request.timeout) if request.timeout is not None else None,
        timeout_action=TimeoutAction(request.timeout_action.value),  # the same words
        auto_reject_previous_approvals=request.auto_reject_previous_approvals,
        message_template=fitting_message(request.message.template),
        message=fitting_message(request.message.text),
        include_pipeline_execution_history=request.include_pipeline_execution_history,
        execution_history=_history(request) if request.include_pipeline_execution_history else [],
        current_stage=stage_metadata(request.current_stage),
        upcoming_stages=[stage_metadata(stage) for stage in request.upcoming_stages],
        custom_data={"unresolved": ", ".join(request.message.unresolved)} if request.message.unresolved else {},
        requested_at=request.requested_at,
    )


# ---------------------------------------------------------------------------------------------------- lifecycle


def step_changed(
    execution: Execution, step: StepState, *, at: datetime, gate_id: str | None = None
) -> wire.ExecutionStepChanged:
    """A step's new status as an ExecutionStepChanged event."""
    stage = execution.plan.stage(step.stage)
    outputs: dict[str, str] = dict(step.outputs)
    if step.approval is not None:
        outputs.update({f"approverInputs.{name}": value for name, value in step.approval.inputs.items()})
    return wire.ExecutionStepChanged(
        execution_id=execution.execution_id,
        pipeline_id=execution.pipeline.identifier,
        stage_id=stage.identifier,
        stage_name=stage.name,
        step_id=step.identifier,
        step_name=step.name,
        step_type=step.type,
        attempt=step.attempt,
        status=RUN_STATUS[step.status],
        gate_id=gate_id,
        outputs=outputs if step.status == StepStatus.SUCCEEDED else {},
        error=step.reason[:4096] if step.reason and step.status != StepStatus.SUCCEEDED else None,
        changed_at=at,
    )


def _failure(execution: Execution) -> tuple[FailureCause, StepState | None]:
    failed = [s for s in execution.steps() if s.status in (StepStatus.APPROVAL_REJECTED, StepStatus.EXPIRED)]
    failed += [s for s in execution.steps() if s.status == StepStatus.FAILED]
    if not failed:
        return FailureCause.STEP_FAILED, None
    step = failed[0]
    if step.status == StepStatus.APPROVAL_REJECTED:
        return FailureCause.APPROVAL_REJECTED, step
    if step.status == StepStatus.EXPIRED:
        return FailureCause.APPROVAL_EXPIRED, step
    if step.reason and step.reason.startswith("timed out"):
        return FailureCause.TIMEOUT, step
    return FailureCause.STEP_FAILED, step


def finished(execution: Execution, action: ExecutionFinished) -> wire.EventData:
    """ExecutionSucceeded, ExecutionFailed or ExecutionAborted for the end of an execution."""
    common: dict[str, Any] = {
        "execution_id": execution.execution_id,
        "pipeline_id": execution.pipeline.identifier,
        "finished_at": action.finished_at,
    }
    if action.status == "SUCCEEDED":
        return wire.ExecutionSucceeded(**common)
    if action.status == "ABORTED":
        return wire.ExecutionAborted(**common, reason=(action.reason or "")[:4096])
    cause, step = _failure(execution)
    return wire.ExecutionFailed(
        **common,
        cause=cause,
        stage_id=step.stage if step else None,
        step_id=step.identifier if step else None,
        error=(action.reason or "")[:4096],
    )
