"""The executor's pure domain: pipeline definitions (`pipeline`), their plan (`plan`), `<+...>` expressions
(`expressions`), the execution state machine (`execution`) and what it asks for (`actions`). No I/O besides reading
YAML files given by path; no clock (time is passed in)."""

from signoff.executor.domain.actions import (
    Action,
    ApprovalRequest,
    Approver,
    CancelApproval,
    CancelStep,
    ExecutionFinished,
    RequestApproval,
    RunShellScript,
    StartWait,
    TriggeredBy,
)
from signoff.executor.domain.execution import Execution, InvalidStart, InvalidTransition, UnknownStep
from signoff.executor.domain.expressions import Context, Rendered, Unknown, render, render_marked
from signoff.executor.domain.pipeline import (
    Pipeline,
    PipelineError,
    parse_pipeline,
    validate_pipeline,
)
from signoff.executor.domain.plan import Plan, build_plan
from signoff.executor.domain.state import ExecutionStatus, StepState, StepStatus

__all__ = [
    "Action",
    "ApprovalRequest",
    "Approver",
    "CancelApproval",
    "CancelStep",
    "Context",
    "Execution",
    "ExecutionFinished",
    "ExecutionStatus",
    "InvalidStart",
    "InvalidTransition",
    "Pipeline",
    "PipelineError",
    "Plan",
    "Rendered",
    "RequestApproval",
    "RunShellScript",
    "StartWait",
    "StepState",
    "StepStatus",
    "TriggeredBy",
    "Unknown",
    "UnknownStep",
    "build_plan",
    "parse_pipeline",
    "render",
    "render_marked",
    "validate_pipeline",
]
