"""The /api/v1 documents: request bodies and answers (the OpenAPI document is generated from these).

Gate and execution contents reuse the wire contract's models (a gate's stages, history and inputs are what the
approval request carried) and the notifier's resolved stage views, so a value has one model wherever it appears.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from signoff.contracts.events import ApproverInput, DecisionStatus, HistoryEntry, RefusalReason
from signoff.notifier.domain.view import StageView

DecisionOutcome = Literal["counted", "pending"]


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`)."""

    type: str = Field(description="A URI naming the problem; `urn:signoff:problem:<code>`.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, for a person.")
    code: str = Field(description="Machine-readable reason (e.g. `not_eligible`, `self_approval`, `unauthenticated`).")
    instance: str | None = Field(None, description="The request path.")
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="Per field: `field` (dotted path) and `message` (validation problems)."
    )
    decision_id: str | None = Field(None, description="The decision this answer is about, when there is one.")


class Links(BaseModel):
    self: str = Field(description="This resource in the API.")
    page: str = Field(description="The approval page of this gate (where notification links land).")
    approve: str = Field(description="The page with the Approve button focused (a GET never decides).")
    reject: str = Field(description="The page with the Reject button focused.")


class GateSummary(BaseModel):
    """One gate in a list."""

    gate_id: str
    pipeline_id: str
    pipeline_name: str
    execution_id: str
    stage_id: str
    stage_name: str
    step_id: str
    step_name: str
    attempt: int
    status: str = Field(description="pending, approved, rejected, expired or cancelled.")
    triggered_by: str = Field(description="User id of whoever started the execution.")
    opened_at: datetime
    expires_at: datetime
    time_left: str = Field(description="Until expiry, for a person (`3h 20m left`), or `expired`.")
    environments: list[str] = Field(description="Environment refs of the stage holding the approval step.")
    groups: list[str] = Field(description="User groups whose members may approve.")
    links: Links


class RuleProgress(BaseModel):
    """One rule of the policy and how far it is."""

    user_groups: list[str]
    users: list[str]
    minimum_count: int
    approved_by: list[str] = Field(description="Approvers whose current vote counts for this rule.")
    satisfied: bool
    text: str = Field(description="`1 of 2 approvers` (from sre, qa).")


class PolicyProgress(BaseModel):
    rules: list[RuleProgress]
    disallow_pipeline_executor: bool
    text: str = Field(description="The whole policy's progress in one line.")


class VoteView(BaseModel):
    decision_id: str
    approver: str
    approver_email: str | None = Field(None, description="The approver's e-mail in the gate's directory snapshot.")
    status: DecisionStatus
    comment: str
    inputs: dict[str, str]
    source: str = Field(description="How it came in: api, slack, codepipeline, harness, …")
    decided_at: datetime
    recorded_at: datetime


class YourTurn(BaseModel):
    """Whether the authenticated user may decide this gate now, and why not."""

    may_decide: bool
    reason: RefusalReason | None = Field(None, description="not_eligible, self_approval or gate_closed.")
    current_vote: DecisionStatus | None = Field(
        None, description="Your current vote, if you voted (you may change it)."
    )


class GateDetail(GateSummary):
    """One gate, everything an approver needs to decide."""

    message: str = Field(description="The approval message exactly as the pipeline sent it (expressions resolved).")
    message_template: str = Field(description="The message as written in the pipeline, with `<+…>` expressions.")
    token: str = Field(description="The gate's current token (CodePipeline's; `put-approval-result` needs it).")
    closed_at: datetime | None
    timeout_action: str
    policy: PolicyProgress
    inputs: list[ApproverInput]
    votes: list[VoteView]
    history: list[HistoryEntry]
    current_stage: StageView
    upcoming_stages: list[StageView]
    review_url: str | None
    custom_data: dict[str, str]
    you: YourTurn


class GateList(BaseModel):
    gates: list[GateSummary]
    next: str | None = Field(None, description="Cursor of the next page (pass as `after`), when there is one.")


class DecisionRequest(ApiModel):
    """A vote on a gate, by the authenticated user."""

    status: DecisionStatus = Field(description="`Approved` or `Rejected`.")
    comment: str = Field("", max_length=4096, description="Why.")
    inputs: dict[str, str] = Field(default_factory=dict, description="Approver input values, by input name.")
    token: str | None = Field(
        None, max_length=256, description="Pin the vote to this token (refused as stale if the gate moved on)."
    )
    on_behalf_of: str | None = Field(
        None,
        max_length=128,
        description="Service principals only (credential with the `act_on_behalf` permission): the user deciding.",
    )


class BulkItem(DecisionRequest):
    gate_id: str = Field(min_length=1, max_length=128)


class BulkRequest(ApiModel):
    decisions: list[BulkItem] = Field(min_length=1, max_length=100)


class DecisionAnswer(BaseModel):
    """The approval service's answer to a decision."""

    decision_id: str
    gate_id: str
    outcome: DecisionOutcome = Field(
        description="`counted`: the vote is recorded. `pending`: no answer within the wait (202); ask the audit."
    )
    approver: str
    status: DecisionStatus
    replaced_earlier_vote: bool = Field(False, description="This vote replaced your earlier vote on the gate.")
    gate_status: str | None = Field(None, description="The gate's status after this vote.")
    progress: str | None = Field(None, description="The policy's progress after this vote (`1 of 2 approvers`).")
    message: str = Field(description="The answer in words.")


class BulkResult(BaseModel):
    gate_id: str
    http_status: int
    answer: DecisionAnswer | None = None
    problem: Problem | None = None


class BulkAnswer(BaseModel):
    results: list[BulkResult]


class AuditEntry(BaseModel):
    at: datetime
    kind: str = Field(description="requested, vote, refused, outcome, cancel, or denied (refused by the api).")
    decision_id: str | None
    actor: str | None
    reason: str | None
    source: str | None = Field(None, description="How a decision came in (api, slack, …).")
    detail: dict[str, Any]
    text: str = Field(description="The entry in words.")


class AuditTrail(BaseModel):
    gate_id: str
    entries: list[AuditEntry]


class ExecutionRequest(ApiModel):
    """Start a pipeline: its YAML (validated as `signoff run` validates it) and variables."""

    pipeline_yaml: str = Field(min_length=1, max_length=262_144)
    variables: dict[str, str] = Field(default_factory=dict)


class ExecutionSummary(BaseModel):
    execution_id: str
    pipeline: str
    pipeline_name: str
    sequence: int
    status: str
    reason: str | None
    triggered_by: str | None
    started_at: datetime
    finished_at: datetime | None
    current: list[str] = Field(description="The steps running or waiting now, as `path (STATUS)`.")


class ExecutionDetail(ExecutionSummary):
    refused: str | None = Field(None, description="Why the executor refused to run it, when it did.")


class ExecutionStarted(BaseModel):
    execution_id: str
    pipeline: str
    triggered_by: str


class AbortRequest(ApiModel):
    reason: str = Field("", max_length=1024)


class StepLog(BaseModel):
    step_path: str
    attempt: int
    exit_code: int | None
    output: str


class StepFailure(BaseModel):
    """A step that failed without running a script (a refused or unanswered approval): why."""

    step_path: str
    attempt: int
    status: str
    reason: str


class ExecutionLogs(BaseModel):
    execution_id: str
    logs: list[StepLog]
    failures: list[StepFailure] = Field(
        default_factory=list, description="Steps that failed without a script's output, with the reason."
    )


class Me(BaseModel):
    user: str
    credential: str
    permissions: list[str]
