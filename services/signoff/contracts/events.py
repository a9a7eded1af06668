"""The `data` models of every event signoff publishes or accepts, and the registry of CloudEvents types.

Commands are imperative (`ApprovalRequested` is a request to open a gate, `ApprovalDecision` a request to vote), facts
are past tense (`GateOpened`, `GateApproved`). Field names are snake_case on the wire; the policy and approver-input
sub-models also accept the camelCase of a Harness `HarnessApproval` step's `spec`, so that YAML validates as written.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Self

import rfc8785
from pydantic import Field, StringConstraints, model_validator

from signoff.contracts.base import (
    Comment,
    ContractModel,
    Email,
    EventData,
    HttpUrl,
    Identifier,
    Name,
    Person,
    Ref,
    StringMap,
    UtcDateTime,
)
from signoff.contracts.durations import DurationText, parse_duration

# ---------------------------------------------------------------------------------------------------------------------
# Enumerations


class TimeoutAction(StrEnum):
    """What happens when a gate's timeout passes: fail the pipeline (Harness's behaviour), or decide automatically."""

    FAIL = "fail"
    APPROVE = "approve"
    REJECT = "reject"


class DecisionStatus(StrEnum):
    """An approver's answer, capitalised as CodePipeline's `put-approval-result` requires."""

    APPROVED = "Approved"
    REJECTED = "Rejected"


class StageType(StrEnum):
    """The stage types the executor runs (Harness's names)."""

    DEPLOYMENT = "Deployment"
    CI = "CI"
    APPROVAL = "Approval"
    CUSTOM = "Custom"


class EnvironmentType(StrEnum):
    """Harness's environment types."""

    PRODUCTION = "Production"
    PRE_PRODUCTION = "PreProduction"


class RunStatus(StrEnum):
    """The state of a stage or step of an execution; `waiting` is a step held by an open approval gate."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class ApprovalCause(StrEnum):
    """Why a gate was approved: its policy was met, or its timeout passed with timeout action `approve`."""

    APPROVERS = "approvers"
    TIMEOUT_ACTION = "timeout_action"


class RejectionCause(StrEnum):
    """Why a gate was rejected: an eligible approver rejected it (any rejection wins), its timeout passed with
    timeout action `reject`, or a newer gate of the same step was approved and superseded it
    (`auto_reject_previous_approvals`)."""

    APPROVER = "approver"
    TIMEOUT_ACTION = "timeout_action"
    SUPERSEDED = "superseded"


class RefusalReason(StrEnum):
    """Why a decision was refused, machine-readable:

    - `unsigned`: the decision carries no signature.
    - `bad_signature`: the signature does not match the decision under its source's key.
    - `unknown_source`: no key is configured for the decision's source.
    - `stale_token`: the token is not the gate's current token.
    - `unknown_gate`: no gate has that id, or no pending gate matches the pipeline, stage and action names.
    - `gate_closed`: the gate already has its final state.
    - `not_eligible`: the approver is not listed in the policy (neither a user nor a member of a user group).
    - `self_approval`: the approver triggered the pipeline and the policy disallows the pipeline executor.
    - `invalid_inputs`: an approver input is unknown, required but empty, or not one of its allowed values.
    - `duplicate`: the decision id was already seen, counted or refused (a replay, not a second vote).
    - `stale_decision`: `decided_at` is further from the decision's arrival than the service allows
      (`SIGNOFF_DECISION_MAX_AGE`).
    """

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SOURCE = "unknown_source"
    STALE_TOKEN = "stale_token"  # noqa: S105 - a reason code, not a secret
    UNKNOWN_GATE = "unknown_gate"
    GATE_CLOSED = "gate_closed"
    NOT_ELIGIBLE = "not_eligible"
    SELF_APPROVAL = "self_approval"
    INVALID_INPUTS = "invalid_inputs"
    DUPLICATE = "duplicate"
    STALE_DECISION = "stale_decision"


class FailureCause(StrEnum):
    """Why an execution failed."""

    STEP_FAILED = "step_failed"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_EXPIRED = "approval_expired"
    TIMEOUT = "timeout"
    INVALID_PIPELINE = "invalid_pipeline"


# ---------------------------------------------------------------------------------------------------------------------
# Approval policy and approver inputs (the Harness `spec.approvers` / `spec.approverInputs` shapes)

InputName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
Message = Annotated[str, StringConstraints(max_length=32768)]


class _Approvers(ContractModel):
    user_groups: list[Identifier] = Field(
        default_factory=list,
        alias="userGroups",
        description="User groups whose members may approve (Harness `userGroups`).",
    )
    users: list[Identifier] = Field(default_factory=list, description="Users who may approve, by user id.")
    minimum_count: int = Field(
        1, ge=1, alias="minimumCount", description="Unique approvals needed (Harness `minimumCount`)."
    )

    def names_someone(self) -> bool:
        return bool(self.user_groups or self.users)


class ApprovalRule(_Approvers):
    """One requirement of a policy: at least `minimum_count` unique approvals from the listed groups and users."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.names_someone():
            raise ValueError("an approval rule must list user_groups or users")
        # Whether the rule can be met (enough people, known groups and users) is the approval service's to decide:
        # a request it cannot serve is refused with a RequestRefused the requester sees, not dead-lettered.
        return self


class ApprovalPolicy(_Approvers):
    """Who may approve and how many must: the Harness `approvers` block, plus optional `rules`.

    The top-level groups/users/`minimum_count` form one rule (when they list anyone); every entry of `rules` is
    another; the gate is approved when every rule passes, and rejected by any eligible approver's rejection.
    """

    disallow_pipeline_executor: bool = Field(
        False,
        alias="disallowPipelineExecutor",
        description="The user who triggered the pipeline may not approve it (Harness `disallowPipelineExecutor`).",
    )
    rules: list[ApprovalRule] = Field(
        default_factory=list,
        description="Further rules that must all pass, e.g. one of `qa` and two of `sre`.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.names_someone() and not self.rules:
            raise ValueError("an approval policy must list user_groups, users or rules")
        return self

    def all_rules(self) -> list[ApprovalRule]:
        """Every rule the gate must pass, the top-level approvers first."""
        top = (
            [ApprovalRule(user_groups=self.user_groups, users=self.users, minimum_count=self.minimum_count)]
            if self.names_someone()
            else []
        )
        return [*top, *self.rules]


class ApproverInput(ContractModel):
    """A value approvers may set when deciding (Harness `approverInputs` entry); the approved gate carries the
    final values (the last approver's value wins, the default fills the rest)."""

    name: InputName = Field(description="Input name; later steps read it as an approval output.")
    default_value: str = Field(
        "", max_length=8192, alias="defaultValue", description="Value used when no approver sets one."
    )
    required: bool = Field(False, description="An approval must end with a non-empty value.")
    allowed_values: list[str] = Field(
        default_factory=list,
        alias="allowedValues",
        description="The only values an approver may choose; empty means any value.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.allowed_values and self.default_value and self.default_value not in self.allowed_values:
            raise ValueError(f"default_value {self.default_value!r} of input {self.name!r} is not an allowed value")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# What a gate is about: natural key, CD metadata, execution history


class GateKey(ContractModel):
    """The natural key of a gate: a repeated request with the same key is the same gate."""

    pipeline_id: Identifier = Field(description="Pipeline identifier.")
    execution_id: Identifier = Field(description="Execution id.")
    stage_id: Identifier = Field(description="Identifier of the stage holding the approval step.")
    step_id: Identifier = Field(description="Identifier of the approval step.")
    attempt: int = Field(1, ge=1, description="Attempt of the step, from 1; a retried step opens a new gate.")

    def as_path(self) -> str:
        """`pipeline/execution/stage/step/attempt`: the key as one string (ids never contain `/`)."""
        return f"{self.pipeline_id}/{self.execution_id}/{self.stage_id}/{self.step_id}/{self.attempt}"


class FilterType(StrEnum):
    """A target filter's type (Harness `filters[].type`): keep every candidate, or those whose tags match."""

    ALL = "all"
    TAGS = "tags"


class FilterEntity(StrEnum):
    """What a target filter chooses (Harness `filters[].entities`)."""

    ENVIRONMENTS = "environments"
    INFRASTRUCTURES = "infrastructures"
    GITOPS_CLUSTERS = "gitOpsClusters"


class FilterMatchType(StrEnum):
    """How a tags filter matches (Harness `spec.matchType`): every tag, or at least one."""

    ALL = "all"
    ANY = "any"


class TargetFilter(ContractModel):
    """A filter that chose deployment targets by catalog tag, as the pipeline wrote it with its expressions
    resolved (docs/pipelines.md, "Targets chosen by filter")."""

    type: FilterType = Field(description="`all` keeps every candidate; `tags` those whose tags match.")
    entities: list[FilterEntity] = Field(min_length=1, description="What it chooses.")
    match_type: FilterMatchType | None = Field(None, description="For `tags`: every tag must match, or any one.")
    tags: StringMap = Field(
        default_factory=dict,
        description="The tags (key -> value; an empty value asks for the key only). A value that could not be "
        "resolved yet keeps its `<+...>` expression as written.",
    )
    tags_expression: Ref | None = Field(
        None, description="The tag set as written when it is one expression that could not be resolved yet."
    )
    unresolved_reason: Comment | None = Field(
        None,
        description="Why the filter could not be applied yet (an expression known only later); its targets are "
        "then not listed.",
    )


class EnvironmentRef(ContractModel):
    """An environment a stage deploys to, with the infrastructure definitions and GitOps clusters chosen in it."""

    ref: Ref = Field(description="Environment identifier, or an unresolved `<+...>` expression.")
    type: EnvironmentType | None = Field(None, description="Production or PreProduction, when known.")
    infrastructure_refs: list[Ref] = Field(
        default_factory=list, description="Infrastructure definitions in this environment (identifiers or expressions)."
    )
    gitops_cluster_refs: list[Ref] = Field(
        default_factory=list, description="GitOps clusters in this environment (identifiers or expressions)."
    )
    filters: list[TargetFilter] = Field(
        default_factory=list,
        description="The filters that chose this environment's infrastructures / GitOps clusters (its own, or the "
        "stage's); empty when they were named.",
    )


class Artifact(ContractModel):
    """An artifact a stage deploys; each part may still be an unresolved expression."""

    service_ref: Ref | None = Field(None, description="The service the artifact belongs to, in multi-service stages.")
    image: Ref = Field(description="Image or package name, e.g. `registry.example.com/payments-api`.")
    tag: Ref | None = Field(None, description="Tag or version, e.g. `1.4.2` or `<+artifact.tag>`.")
    digest: Ref | None = Field(None, description="Content digest, e.g. `sha256:…`.")


class StageMetadata(ContractModel):
    """CD metadata of one stage (the current one or an upcoming one), as references the notifier resolves from the
    catalog into names, types and links. Several services and environments are allowed (multi-service,
    multi-environment deployments)."""

    identifier: Identifier = Field(description="Stage identifier.")
    name: Name = Field(description="Stage name.")
    type: StageType = Field(description="Stage type.")
    service_refs: list[Ref] = Field(default_factory=list, description="Services deployed (identifiers or expressions).")
    environment_group_ref: Ref | None = Field(None, description="Environment group, when the stage deploys to one.")
    environments: list[EnvironmentRef] = Field(
        default_factory=list, description="Environments deployed to, each with its infrastructures and clusters."
    )
    environment_filters: list[TargetFilter] = Field(
        default_factory=list,
        description="The filters that chose `environments`; while one is unresolved, `environments` is empty.",
    )
    artifacts: list[Artifact] = Field(default_factory=list, description="Artifacts deployed.")
    custom_metadata: StringMap = Field(default_factory=dict, description="Free-form metadata of the stage.")


class HistoryEntry(ContractModel):
    """One stage or step run so far in the execution (shown when `include_pipeline_execution_history` is set)."""

    stage_id: Identifier = Field(description="Stage identifier.")
    stage_name: Name = Field(description="Stage name.")
    step_id: Identifier | None = Field(None, description="Step identifier; absent for the stage itself.")
    step_name: Name | None = Field(None, description="Step name; absent for the stage itself.")
    status: RunStatus = Field(description="Status when the approval was requested.")
    started_at: UtcDateTime | None = Field(None, description="When it started.")
    ended_at: UtcDateTime | None = Field(None, description="When it ended; absent while running.")


class EligibleApprover(Person):
    """A user who may decide on a gate, with the addresses the notifier reaches them at."""

    slack: str | None = Field(None, max_length=256, description="Slack member id, e.g. `U012AB3CD`.")
    teams: str | None = Field(None, max_length=256, description="Microsoft Teams user (UPN or object id).")
    groups: list[Identifier] = Field(
        default_factory=list, description="The policy's user groups this user is eligible through (routing)."
    )


class Vote(ContractModel):
    """One approver's current vote on a gate."""

    decision_id: Identifier = Field(description="The decision that cast this vote.")
    source: SourceName = Field(description="Decision source it came through (cli, web, slack, …).")
    approver: Identifier = Field(description="User id of the approver.")
    approver_email: Email | None = Field(
        None, description="The approver's e-mail, when the gate's directory snapshot lists one."
    )
    status: DecisionStatus = Field(description="Approved or Rejected.")
    comment: Comment = Field("", description="The approver's comment.")
    inputs: StringMap = Field(default_factory=dict, description="Approver input values set with this vote.")
    decided_at: UtcDateTime = Field(description="When the approver decided.")


class GateDetails(ContractModel):
    """Everything an approval request says about its gate; repeated in `GateOpened` so the notifier needs nothing
    else."""

    key: GateKey = Field(description="Natural key of the gate.")
    pipeline_name: Name = Field(description="Pipeline name.")
    stage_name: Name = Field(description="Name of the stage holding the approval step.")
    step_name: Name = Field(description="Name of the approval step.")
    triggered_by: Person = Field(description="Who triggered the execution (the pipeline executor).")
    policy: ApprovalPolicy = Field(description="Who may approve and how many must.")
    approver_inputs: list[ApproverInput] = Field(
        default_factory=list, description="Values approvers may set; names are unique."
    )
    timeout: DurationText | None = Field(
        None,
        description="How long the gate waits, Harness syntax (`1d`, `2h30m`) or ISO 8601 (`PT1H`); when absent, the "
        "approval service's default (`SIGNOFF_DEFAULT_TIMEOUT`, `1d` unless configured). A timeout over the "
        "service's maximum is refused (RequestRefused).",
    )
    timeout_action: TimeoutAction = Field(TimeoutAction.FAIL, description="What happens when the timeout passes.")
    auto_reject_previous_approvals: bool = Field(
        False,
        description="Harness's isAutoRejectEnabled: once this gate is approved, the older pending gates of the same "
        "pipeline step are rejected (superseded).",
    )
    message_template: Message = Field("", description="The approval message as written, with `<+...>` expressions.")
    message: Message = Field(
        "",
        description="The approval message with expressions resolved up to the approval step; what is unresolved "
        "stays as written.",
    )
    include_pipeline_execution_history: bool = Field(
        False, description="Show the execution history in notifications (Harness `includePipelineExecutionHistory`)."
    )
    execution_history: list[HistoryEntry] = Field(
        default_factory=list, description="Stages and steps run so far; only when the history is included."
    )
    current_stage: StageMetadata = Field(description="Metadata of the stage holding the approval step.")
    upcoming_stages: list[StageMetadata] = Field(
        default_factory=list, description="Metadata of the stages after it, in order: what the approval lets through."
    )
    review_url: HttpUrl | None = Field(None, description="Content to review before deciding (CodePipeline's URL).")
    custom_data: StringMap = Field(default_factory=dict, description="Free-form data the requester attaches.")
    requested_at: UtcDateTime = Field(description="When the pipeline reached the approval step.")

    @property
    def timeout_span(self) -> timedelta | None:
        """The timeout as a timedelta; None when the request leaves it to the service's default."""
        return parse_duration(self.timeout) if self.timeout is not None else None

    @model_validator(mode="after")
    def _check_details(self) -> Self:
        if self.current_stage.identifier != self.key.stage_id:
            raise ValueError(
                f"current_stage.identifier {self.current_stage.identifier!r} differs from key.stage_id "
                f"{self.key.stage_id!r}"
            )
        names = [item.name for item in self.approver_inputs]
        if len(names) != len(set(names)):
            raise ValueError(f"approver input names must be unique: {names}")
        if self.execution_history and not self.include_pipeline_execution_history:
            raise ValueError("execution_history is only sent when include_pipeline_execution_history is set")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# Approval requests and decisions


class ApprovalRequested(GateDetails, EventData):
    """A pipeline reached an approval step and asks for a gate. Published by the executor (or any pipeline system);
    the approval service opens the gate, or finds the existing one for the same natural key.

    CloudEvents subject and Kafka key: the natural key path (the gate id does not exist yet)."""

    event_type = "io.signoff.approval.requested.v1"

    def default_subject(self) -> str:
        return self.key.as_path()


class ApprovalCancelRequested(EventData):
    """The pipeline no longer waits for its gate (execution aborted); the approval service cancels it if it is still
    pending. Subject and key: the natural key path, so the cancel follows its request on the same partition."""

    event_type = "io.signoff.approval.cancel_requested.v1"

    key: GateKey = Field(description="Natural key of the gate to cancel.")
    gate_id: Identifier | None = Field(None, description="The gate id, when the requester has seen GateOpened.")
    reason: Comment = Field("", description="Why, shown to the approvers.")
    requested_at: UtcDateTime = Field(description="When the cancel was requested.")

    def default_subject(self) -> str:
        return self.key.as_path()


def token_digest(token: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 token: the Kafka key of decisions. Every decision carries its gate's
    token, whichever way it names the gate, so every producer can compute it; the token itself stays out of keys
    (keys end up in logs and tooling)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApprovalDecision(EventData):
    """An approver's vote on a gate, from a decision source (CLI, web, Slack, another system).

    The gate is named by `gate_id`, or CodePipeline-style by `pipeline_name` + `stage_name` + `action_name` (our
    pipeline, stage and step identifiers: CodePipeline's names are unique keys, so they map to identifiers);
    either way `token` must be the gate's current token. `signature` is the lowercase hex HMAC-SHA256, under the
    source's key, of the RFC 8785 (JSON Canonicalization Scheme) form of the `data` object exactly as sent, without
    its `signature` member: the receiver canonicalises what it received, so a sender signs what it sends (members
    it left out stay out, its timestamp text is kept as written, unknown members are covered too). Unsigned or
    badly signed decisions are accepted on the wire so the approval service can refuse them with a
    `DecisionRefused` the sender sees. Worked example: docs/decisions.md.

    Subject: the gate id, else `pipeline/stage/action`. Kafka key: `token_digest(token)`."""

    event_type = "io.signoff.approval.decision.v1"
    checked_as_sent = True  # the signature covers the data object as sent

    decision_id: Identifier = Field(
        description="Unique id chosen by the sender; a replay of the same id is a duplicate, not a second vote."
    )
    source: SourceName = Field(description="Decision source name (cli, web, slack, …); selects the signing key.")
    gate_id: Identifier | None = Field(None, description="The gate decided on.")
    pipeline_name: Identifier | None = Field(None, description="CodePipeline-style: pipeline identifier.")
    stage_name: Identifier | None = Field(None, description="CodePipeline-style: stage identifier.")
    action_name: Identifier | None = Field(None, description="CodePipeline-style: approval step identifier.")
    token: str = Field(min_length=1, max_length=256, description="The gate's current token.")
    status: DecisionStatus = Field(description="Approved or Rejected.")
    approver: Identifier = Field(description="User id of the approver.")
    submitted_by: Identifier | None = Field(
        None,
        description="The service principal (a chat bot, a change-management system) that submitted this decision "
        "on the approver's behalf, when its credential carried that permission; absent when the approver did.",
    )
    comment: Comment = Field("", description="Comment (CodePipeline `summary`).")
    inputs: StringMap = Field(default_factory=dict, description="Approver input values, by input name.")
    decided_at: UtcDateTime = Field(description="When the approver decided.")
    signature: str | None = Field(
        None,
        max_length=256,
        description="Lowercase hex HMAC-SHA256, under the source's key, of the RFC 8785 canonical JSON of this data"
        " object as sent, without `signature` (docs/decisions.md has a worked example).",
    )

    @model_validator(mode="after")
    def _check_gate_named(self) -> Self:
        names = (self.pipeline_name, self.stage_name, self.action_name)
        if any(names) and not all(names):
            raise ValueError("pipeline_name, stage_name and action_name go together")
        if self.gate_id is None and not all(names):
            raise ValueError("a decision names its gate by gate_id or by pipeline_name, stage_name and action_name")
        return self

    def default_subject(self) -> str:
        return self.gate_id or f"{self.pipeline_name}/{self.stage_name}/{self.action_name}"

    def partition_key(self) -> str:
        return token_digest(self.token)

    def signing_input(self, sent: Mapping[str, Any] | None = None) -> bytes:
        """The bytes the signature covers: RFC 8785 canonical JSON of the data object `sent` (the decoded JSON as
        received, see `Event.received`) without `signature`; without `sent`, of this model as `encode` sends it.
        Raises ValueError when `sent` cannot be canonicalised (e.g. an integer beyond JSON's safe range)."""
        body = dict(sent) if sent is not None else self.model_dump(mode="json", exclude_none=True)
        body.pop("signature", None)
        try:
            return rfc8785.dumps(body)
        except rfc8785.CanonicalizationError as exc:
            raise ValueError(f"the decision cannot be canonicalised: {exc}") from None

    def signed(self, key: bytes) -> ApprovalDecision:
        """This decision with its signature under `key` (the source's secret), over the data `encode` sends."""
        signature = hmac.new(key, self.signing_input(), hashlib.sha256).hexdigest()
        return self.model_copy(update={"signature": signature})

    def signature_valid(self, key: bytes, sent: Mapping[str, Any] | None = None) -> bool:
        """Whether the signature matches under `key` over `sent` (the data object as received; default: this
        model as sent); False when unsigned or not canonicalisable. Constant-time comparison."""
        if self.signature is None:
            return False
        try:
            expected = hmac.new(key, self.signing_input(sent), hashlib.sha256).hexdigest()
        except ValueError:
            return False
        return hmac.compare_digest(expected, self.signature)

    @classmethod
    def from_codepipeline(
        cls,
        doc: Mapping[str, Any],
        *,
        approver: str,
        source: str,
        decision_id: str | None = None,
        decided_at: datetime | None = None,
    ) -> ApprovalDecision:
        """A decision from CodePipeline's `put-approval-result` input JSON (`pipelineName`, `stageName`,
        `actionName`, `token`, `result.status`, `result.summary`), unsigned. Raises pydantic's ValidationError
        (a ValueError) when `doc` is not that shape."""
        result = CodePipelineApprovalResult.model_validate(doc)
        return cls(
            decision_id=decision_id or str(uuid.uuid4()),
            source=source,
            pipeline_name=result.pipeline_name,
            stage_name=result.stage_name,
            action_name=result.action_name,
            token=result.token,
            status=result.result.status,
            approver=approver,
            comment=result.result.summary,
            decided_at=decided_at or datetime.now(UTC),
        )


class CodePipelineResult(ContractModel):
    """The `result` object of CodePipeline's `put-approval-result`."""

    status: DecisionStatus = Field(description="`Approved` or `Rejected` (capitalised).")
    summary: Comment = Field(description="The approver's comments.")


class CodePipelineApprovalResult(ContractModel):
    """CodePipeline's `put-approval-result` input (`--cli-input-json`), in its own camelCase spelling."""

    pipeline_name: Identifier = Field(alias="pipelineName", description="Pipeline holding the approval action.")
    stage_name: Identifier = Field(alias="stageName", description="Stage holding the approval action.")
    action_name: Identifier = Field(alias="actionName", description="The approval action.")
    token: str = Field(min_length=1, max_length=256, description="Token of the waiting approval.")
    result: CodePipelineResult = Field(description="The answer.")


# ---------------------------------------------------------------------------------------------------------------------
# Gate events (published by the approval service only)


class GateEvent(EventData):
    """Base of the events about one gate. Subject and Kafka key: the gate id."""

    gate_id: Identifier = Field(description="The gate's id, assigned by the approval service.")
    key: GateKey = Field(description="Natural key of the gate, so consumers map it to the execution step.")

    def default_subject(self) -> str:
        return self.gate_id


class GateOpened(GateDetails, GateEvent):
    """A gate is pending: notify the eligible approvers.

    It carries the token because the notifier builds approve / reject links from it. The token is not a
    credential (decisions are authenticated by their source's signature and checked against the policy); it only
    makes sure a decision is about this gate and not an older or retried one. CodePipeline likewise shows the token
    to anyone who can read the pipeline state, and only the approval service may write this topic."""

    event_type = "io.signoff.gate.opened.v1"

    token: str = Field(min_length=1, max_length=256, description="The gate's current token; decisions must carry it.")
    opened_at: UtcDateTime = Field(description="When the gate opened.")
    expires_at: UtcDateTime = Field(
        description="When the timeout passes (the requested timeout, capped by the service's maximum)."
    )
    eligible_approvers: list[EligibleApprover] = Field(
        default_factory=list, description="Users who may decide, resolved from the policy's users and groups."
    )

    @model_validator(mode="after")
    def _check_expiry(self) -> Self:
        if self.expires_at <= self.opened_at:
            raise ValueError("expires_at must be after opened_at")
        return self


class VoteRecorded(GateEvent):
    """An eligible approver's vote was counted; the gate is still pending (an outcome event follows when the vote
    decides it)."""

    event_type = "io.signoff.gate.vote_recorded.v1"

    vote: Vote = Field(description="The vote as recorded.")
    replaced_earlier_vote: bool = Field(False, description="The approver changed an earlier vote.")
    approved_by: list[Identifier] = Field(
        default_factory=list, description="Users whose current vote is Approved, after this vote."
    )
    recorded_at: UtcDateTime = Field(description="When the vote was recorded.")


class GateApproved(GateEvent):
    """The gate is approved: the pipeline resumes."""

    event_type = "io.signoff.gate.approved.v1"

    cause: ApprovalCause = Field(description="The policy was met, or the timeout action approved it.")
    votes: list[Vote] = Field(default_factory=list, description="Every approver's final vote.")
    inputs: StringMap = Field(
        default_factory=dict,
        description="Final approver input values: the last approver's value wins, defaults fill the rest.",
    )
    approved_at: UtcDateTime = Field(description="When the gate was approved.")


class GateRejected(GateEvent):
    """The gate is rejected: the pipeline fails."""

    event_type = "io.signoff.gate.rejected.v1"

    cause: RejectionCause = Field(description="An approver rejected it, the timeout action did, or it was superseded.")
    votes: list[Vote] = Field(default_factory=list, description="Every approver's final vote.")
    rejected_by: Identifier | None = Field(None, description="The approver who rejected it (cause `approver`).")
    comment: Comment = Field("", description="The rejecting approver's comment.")
    superseded_by: Identifier | None = Field(
        None, description="The newer gate that superseded it (cause `superseded`)."
    )
    rejected_at: UtcDateTime = Field(description="When the gate was rejected.")

    @model_validator(mode="after")
    def _check_cause(self) -> Self:
        if self.cause is RejectionCause.APPROVER and self.rejected_by is None:
            raise ValueError("rejected_by is required when cause is 'approver'")
        if self.cause is RejectionCause.SUPERSEDED and self.superseded_by is None:
            raise ValueError("superseded_by is required when cause is 'superseded'")
        return self


class GateExpired(GateEvent):
    """The gate's timeout passed with timeout action `fail`: the pipeline fails."""

    event_type = "io.signoff.gate.expired.v1"

    votes: list[Vote] = Field(default_factory=list, description="Votes cast before it expired.")
    expired_at: UtcDateTime = Field(description="When the gate expired.")


class GateCancelled(GateEvent):
    """The pipeline cancelled its pending gate (e.g. the execution was aborted)."""

    event_type = "io.signoff.gate.cancelled.v1"

    reason: Comment = Field("", description="Why, as the requester said.")
    cancelled_at: UtcDateTime = Field(description="When the gate was cancelled.")


class DecisionRefused(EventData):
    """A decision was refused and recorded in the audit trail; published so its sender learns why.

    Subject and Kafka key: the gate id when the decision could be matched to a gate, else the decision id."""

    event_type = "io.signoff.gate.decision_refused.v1"

    decision_id: Identifier = Field(description="The refused decision's id.")
    source: SourceName = Field(description="The decision source it claimed.")
    approver: Identifier = Field(description="The approver it claimed.")
    gate_id: Identifier | None = Field(None, description="The gate it was matched to, if any.")
    key: GateKey | None = Field(None, description="That gate's natural key, if any.")
    reason: RefusalReason = Field(description="Machine-readable reason.")
    detail: Comment = Field("", description="Human-readable explanation.")
    refused_at: UtcDateTime = Field(description="When it was refused.")

    def default_subject(self) -> str:
        return self.gate_id or self.decision_id


class RequestRefused(EventData):
    """The approval service cannot serve an approval request, so it opened no gate: nobody could approve it (an
    unknown user group or user, a quorum larger than the eligible people), its timeout action cannot fill a required
    input, or its timeout is over the maximum. Recorded in the audit trail; the pipeline fails at once with the
    reasons instead of waiting. A repeated request with the same key is refused again.

    Subject and Kafka key: the natural key path (there is no gate id)."""

    event_type = "io.signoff.gate.request_refused.v1"

    key: GateKey = Field(description="Natural key of the request.")
    reasons: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], Comment] = Field(
        min_length=1,
        description="Why, by field of the request (e.g. `policy.user_groups`: `unknown user group 'dosc'`).",
    )
    triggered_by: Person | None = Field(None, description="Who triggered the pipeline (told by the notifier).")
    pipeline_name: Name | None = Field(None, description="Name of the pipeline, for messages.")
    step_name: Name | None = Field(None, description="Name of the approval step, for messages.")
    refused_at: UtcDateTime = Field(description="When it was refused.")

    def default_subject(self) -> str:
        return self.key.as_path()

    def describe(self) -> str:
        """`field: reason; field: reason`, for a pipeline's failure reason."""
        return "; ".join(f"{field}: {reason}" for field, reason in self.reasons.items())


# ---------------------------------------------------------------------------------------------------------------------
# Executions


class ExecutionScoped(EventData):
    """Base of the events about one execution. Subject and Kafka key: the execution id."""

    execution_id: Identifier = Field(description="Execution id.")

    def default_subject(self) -> str:
        return self.execution_id


class ExecutionRequested(ExecutionScoped):
    """Start an execution of a pipeline. The requester chooses the execution id, so a repeated request is the same
    execution, not a second one."""

    event_type = "io.signoff.execution.requested.v1"

    pipeline_id: Identifier = Field(description="Identifier of the pipeline definition to run.")
    variables: StringMap = Field(
        default_factory=dict, description="Pipeline variable values (`<+pipeline.variables.x>`)."
    )
    triggered_by: Person = Field(description="Who starts it (the pipeline executor, for `disallowPipelineExecutor`).")
    requested_at: UtcDateTime = Field(description="When it was requested.")
    pipeline_yaml: str | None = Field(
        None,
        max_length=262_144,
        description="The pipeline definition to run (Harness YAML, docs/pipelines.md); its `identifier` must be "
        "`pipeline_id`. The executor keeps it as the pipeline's current definition. Without it, the executor runs "
        "the definition it kept last for `pipeline_id`.",
    )


class ExecutionAbortRequested(ExecutionScoped):
    """Abort a running execution; its pending gate, if any, is cancelled."""

    event_type = "io.signoff.execution.abort_requested.v1"

    requested_by: Person = Field(description="Who asks.")
    reason: Comment = Field("", description="Why.")
    requested_at: UtcDateTime = Field(description="When it was requested.")


class ExecutionEvent(ExecutionScoped):
    """Base of the lifecycle events the executor publishes."""

    pipeline_id: Identifier = Field(description="Pipeline identifier.")


class ExecutionStarted(ExecutionEvent):
    """An execution started."""

    event_type = "io.signoff.execution.started.v1"

    pipeline_name: Name = Field(description="Pipeline name.")
    triggered_by: Person = Field(description="Who started it.")
    started_at: UtcDateTime = Field(description="When it started.")


class ExecutionStepChanged(ExecutionEvent):
    """A stage or step of an execution changed status (a stage when `step_id` is absent)."""

    event_type = "io.signoff.execution.step_changed.v1"

    stage_id: Identifier = Field(description="Stage identifier.")
    stage_name: Name = Field(description="Stage name.")
    step_id: Identifier | None = Field(None, description="Step identifier; absent for the stage itself.")
    step_name: Name | None = Field(None, description="Step name; absent for the stage itself.")
    step_type: str | None = Field(None, max_length=128, description="Step type, e.g. `ShellScript`, `HarnessApproval`.")
    attempt: int = Field(1, ge=1, description="Attempt, from 1.")
    status: RunStatus = Field(description="The new status.")
    gate_id: Identifier | None = Field(None, description="The approval gate, for a HarnessApproval step once known.")
    outputs: StringMap = Field(default_factory=dict, description="Output variables, once the step succeeded.")
    error: Comment | None = Field(None, description="What went wrong, when it failed.")
    changed_at: UtcDateTime = Field(description="When the status changed.")


class ExecutionSucceeded(ExecutionEvent):
    """An execution finished successfully."""

    event_type = "io.signoff.execution.succeeded.v1"

    finished_at: UtcDateTime = Field(description="When it finished.")


class ExecutionFailed(ExecutionEvent):
    """An execution failed."""

    event_type = "io.signoff.execution.failed.v1"

    cause: FailureCause = Field(description="Machine-readable cause.")
    stage_id: Identifier | None = Field(None, description="The stage that failed, if any.")
    step_id: Identifier | None = Field(None, description="The step that failed, if any.")
    error: Comment = Field("", description="Human-readable explanation.")
    finished_at: UtcDateTime = Field(description="When it failed.")


class ExecutionAborted(ExecutionEvent):
    """An execution was aborted on request."""

    event_type = "io.signoff.execution.aborted.v1"

    aborted_by: Person | None = Field(None, description="Who asked for the abort.")
    reason: Comment = Field("", description="Why.")
    finished_at: UtcDateTime = Field(description="When it stopped.")


# ---------------------------------------------------------------------------------------------------------------------
# Registry

EVENT_MODELS: tuple[type[EventData], ...] = (
    ApprovalRequested,
    ApprovalCancelRequested,
    ApprovalDecision,
    GateOpened,
    VoteRecorded,
    GateApproved,
    GateRejected,
    GateExpired,
    GateCancelled,
    DecisionRefused,
    RequestRefused,
    ExecutionRequested,
    ExecutionAbortRequested,
    ExecutionStarted,
    ExecutionStepChanged,
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionAborted,
)
"""Every event model, in documentation order."""

EVENT_TYPES: Mapping[str, type[EventData]] = MappingProxyType({model.event_type: model for model in EVENT_MODELS})
"""CloudEvents `type` -> data model."""
