"""What the execution state machine asks its service to do, and the approval request it builds.

Actions are data: the service carries them out (run a script, arm a timer, publish an approval request through
the outbox) and reports back through the state machine's transitions. They are pydantic models so the service can
persist them and map them onto the wire contracts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from signoff.catalog import ResolvedRef
from signoff.kernel import ApproverInput, DecisionStatus, GateStatus, Policy, TimeoutAction

# Executions stored before the shared kernel spelled these the Harness way; a restore reads either.
_LEGACY_TIMEOUT_ACTIONS = {
    "Expire": TimeoutAction.FAIL,
    "Approve": TimeoutAction.APPROVE,
    "Reject": TimeoutAction.REJECT,
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TriggeredBy(_Model):
    """Who started the execution (`<+pipeline.triggeredBy.name|email>`; also the 'pipeline executor' that
    `disallowPipelineExecutor` refers to)."""

    name: str
    email: str | None = None


class Approver(_Model):
    """A person who decided on an approval."""

    name: str
    email: str | None = None


class ApprovalActivity(_Model):
    """One approver's decision (`<+execution.steps.ID.output.approvalActivities[n]...>`)."""

    approver: Approver
    action: DecisionStatus = Field(description="The shared vocabulary; expressions render it Harness's way (APPROVE).")
    comments: str | None = None
    decided_at: datetime

    @field_validator("action", mode="before")
    @classmethod
    def _legacy_action(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ApprovalOutcome(_Model):
    """How an approval step ended."""

    action: Literal[GateStatus.APPROVED, GateStatus.REJECTED, GateStatus.EXPIRED] = Field(
        description="The gate's final status (expressions render it Harness's way: APPROVED)."
    )
    activities: tuple[ApprovalActivity, ...] = ()
    inputs: dict[str, str] = Field(default_factory=dict, description="Final approver inputs (approved only).")
    decided_at: datetime

    @field_validator("action", mode="before")
    @classmethod
    def _legacy_action(cls, value: Any) -> Any:
        return GateStatus(value.lower()) if isinstance(value, str) else value


# -- the approval request ----------------------------------------------------------------------------------------


class PipelineInfo(_Model):
    identifier: str
    name: str
    execution_id: str
    sequence_id: int
    triggered_by: TriggeredBy
    started_at: datetime


class StepInfo(_Model):
    path: str
    stage_identifier: str
    stage_name: str
    identifier: str
    name: str
    attempt: int


class ApprovalMessage(_Model):
    """The approval message: the template as written, `text` with unresolved expressions kept raw, `marked` with
    them shown as `⟨unresolved: ...⟩` (for people), and the list of what stayed unresolved with reasons."""

    template: str
    text: str
    marked: str
    unresolved: tuple[str, ...] = ()
    reasons: dict[str, str] = Field(default_factory=dict)


class FilterMetadata(_Model):
    """A target filter as applied: tags rendered (an unresolved expression stays as written), its description
    (`environments tagged region=eu OR tier=prod`), and `unresolved`: why it could not be applied yet."""

    type: Literal["all", "tags"]
    entities: tuple[Literal["environments", "infrastructures", "gitOpsClusters"], ...]
    match_type: Literal["all", "any"] | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    tags_expression: str | None = None
    description: str
    unresolved: str | None = None


class EnvironmentMetadata(_Model):
    """An environment of a stage; `filters` are the filters that chose its infrastructures / GitOps clusters."""

    environment: ResolvedRef
    infrastructures: tuple[ResolvedRef, ...] = ()
    gitops_clusters: tuple[ResolvedRef, ...] = ()
    deploy_to_all: bool = False
    filters: tuple[FilterMetadata, ...] = ()


class ArtifactMetadata(_Model):
    identifier: str
    image: str
    tag: str
    unresolved: tuple[str, ...] = ()


class StageMetadata(_Model):
    """A stage's CD metadata with refs resolved against the catalog, or `Unresolved` with the reason.
    `unresolved` lists every expression that stayed unresolved in it."""

    identifier: str
    name: str
    type: str
    status: str
    deployment_type: str | None = None
    gitops_enabled: bool = False
    services: tuple[ResolvedRef, ...] = ()
    environments: tuple[EnvironmentMetadata, ...] = ()
    environment_filters: tuple[FilterMetadata, ...] = Field(
        (), description="Filters that chose the environments; while one is unresolved, `environments` is empty."
    )
    environment_group: ResolvedRef | None = None
    artifacts: tuple[ArtifactMetadata, ...] = ()
    custom_metadata: dict[str, str] = Field(default_factory=dict)
    unresolved: tuple[str, ...] = ()
    target_problems: tuple[str, ...] = Field(
        (), description="Why the stage cannot start with these targets (a filter matched nothing, ...)."
    )


class HistoryStep(_Model):
    path: str
    identifier: str
    name: str
    type: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    approval: ApprovalOutcome | None = None


class HistoryStage(_Model):
    identifier: str
    name: str
    type: str
    status: str
    steps: tuple[HistoryStep, ...] = ()


class ApprovalRequest(_Model):
    """Everything the approval service and the notifier need about one approval step, resolved as far as the
    execution has come."""

    pipeline: PipelineInfo
    step: StepInfo
    message: ApprovalMessage
    include_pipeline_execution_history: bool
    history: tuple[HistoryStage, ...] = Field(
        (), description="Started stages and their finished steps (empty unless includePipelineExecutionHistory)."
    )
    current_stage: StageMetadata
    upcoming_stages: tuple[StageMetadata, ...] = ()
    policy: Policy = Field(description="Who may approve, names rendered (the approval service enforces it).")
    timeout_action: TimeoutAction = TimeoutAction.FAIL
    auto_reject_previous_approvals: bool = False
    inputs: tuple[ApproverInput, ...] = Field((), description="The approver inputs, defaults rendered.")
    timeout: timedelta | None = Field(None, description="The step's timeout; None leaves it to the service's default.")
    requested_at: datetime
    expires_at: datetime | None = Field(None, description="When the gate should expire, if the step says.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_policy(cls, data: Any) -> Any:
        # A pending request stored before the shared kernel carried the Harness approvers block as written, with
        # the timeout action and auto-reject inside it, and inputs with "" for no default.
        policy = data.get("policy") if isinstance(data, dict) else None
        if not isinstance(policy, dict) or "rules" not in policy or "user_groups" not in policy:
            return data
        top = [policy] if policy.get("user_groups") or policy.get("users") else []
        rules = [
            {"user_groups": rule["user_groups"], "users": rule["users"], "minimum_count": rule["minimum_count"]}
            for rule in [*top, *policy["rules"]]
        ]
        inputs = [
            {
                **item,
                "default_value": item.get("default_value") or None,
                "allowed_values": item.get("allowed_values") or None,
            }
            for item in data.get("inputs", ())
        ]
        return {
            **data,
            "policy": {"rules": rules, "disallow_pipeline_executor": policy.get("disallow_pipeline_executor", False)},
            "timeout_action": _LEGACY_TIMEOUT_ACTIONS[policy.get("timeout_action", "Expire")],
            "auto_reject_previous_approvals": policy.get("auto_reject_previous_approvals", False),
            "inputs": inputs,
        }


# -- actions -----------------------------------------------------------------------------------------------------


class RunShellScript(_Model):
    """Run a Bash script with these variables; report `step_succeeded(outputs)` with the value of each output's
    shell variable, or `step_failed(reason)`. The state machine fails the step itself at `deadline`."""

    kind: Literal["run_shell_script"] = "run_shell_script"
    execution_id: str
    step_path: str
    attempt: int
    step_name: str
    shell: Literal["Bash"] = "Bash"
    script: str
    environment: dict[str, str] = Field(default_factory=dict)
    output_variables: dict[str, str] = Field(
        default_factory=dict, description="Output name -> shell variable to read after the script."
    )
    timeout: timedelta
    deadline: datetime


class StartWait(_Model):
    """Arm a timer; at `until` call `tick(now)` (or `step_succeeded`). Re-issued on recovery."""

    kind: Literal["start_wait"] = "start_wait"
    execution_id: str
    step_path: str
    attempt: int
    duration: timedelta
    until: datetime


class RequestApproval(_Model):
    """Publish an approval request; the gate's outcome comes back as `approval_approved/rejected/expired`."""

    kind: Literal["request_approval"] = "request_approval"
    execution_id: str
    step_path: str
    attempt: int
    request: ApprovalRequest


class CancelStep(_Model):
    """Stop a running script or timer; its late report will be ignored."""

    kind: Literal["cancel_step"] = "cancel_step"
    execution_id: str
    step_path: str
    attempt: int
    reason: str


class CancelApproval(_Model):
    """Cancel a pending gate (the execution was aborted)."""

    kind: Literal["cancel_approval"] = "cancel_approval"
    execution_id: str
    step_path: str
    attempt: int
    reason: str


class ExecutionFinished(_Model):
    """The execution reached a final status."""

    kind: Literal["execution_finished"] = "execution_finished"
    execution_id: str
    status: Literal["SUCCEEDED", "FAILED", "ABORTED"]
    reason: str | None = None
    finished_at: datetime


Action: TypeAlias = Annotated[
    RunShellScript | StartWait | RequestApproval | CancelStep | CancelApproval | ExecutionFinished,
    Field(discriminator="kind"),
]
