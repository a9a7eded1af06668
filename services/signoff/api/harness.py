"""Harness's approval REST API on `signoff api`, so a bot that calls Harness works with signoff's URL and a personal
API token in `x-api-key` (docs/harness-api.md):

- `POST /pipeline/api/approvals/{approvalInstanceId}/harness/activity`: the instance id is the gate id;
- `POST /pipeline/api/v1/orgs/{org}/projects/{project}/approvals/execution/{executionId}`: the one waiting
  approval of that execution;
- `GET` of the same path (`?approval_status=WAITING`): the execution's approvals with their inputs.

A vote goes the way of every api vote (DecisionDesk); the approval service judges it. Harness's order of checks
holds: already acted (the gate closed, or this user already voted on it), then self-approval, then group
membership. Organisation and project are accepted and echoed: signoff has one namespace.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

import asyncpg
import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from signoff.api import gates, metrics, models
from signoff.api.identity import TOKEN_PREFIX, AuthenticationFailed, IdentityProviderUnavailable, Principal
from signoff.api.problems import ApiProblem
from signoff.contracts import NUL_PROBLEM, model_nul_field
from signoff.contracts.events import DecisionStatus
from signoff.kernel import user_key

if TYPE_CHECKING:
    from signoff.api.app import ApiContext

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/pipeline/api", include_in_schema=False)

# Harness's names for a gate's status.
STATUS = {
    "pending": "WAITING",
    "approved": "APPROVED",
    "rejected": "REJECTED",
    "expired": "EXPIRED",
    "cancelled": "ABORTED",
}
_REFUSAL_TEXT = {
    "gate_closed": "Harness approval instance has already completed",
    "self_approval": "Pipeline executor is not allowed to approve or reject",
    "not_eligible": "User does not have access to approve or reject",
}


HARNESS_APPROVAL_STATUSES = ("WAITING", "APPROVED", "REJECTED", "FAILED", "ABORTED", "EXPIRED")
"""Harness's `approval_status` values (FAILED matches none of signoff's gates)."""
HARNESS_APPROVAL_TYPES = ("HarnessApproval", "JiraApproval", "ServiceNowApproval", "CustomApproval")
"""Harness's `approval_type` values (signoff's approvals are all HarnessApproval)."""


class HarnessError(Exception):
    """An error answer in Harness's form (`status: ERROR`, a code, a message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ERROR",
                "code": self.code,
                "message": self.message,
                "correlationId": str(uuid.uuid4()),
                "detailedMessage": None,
                "responseMessages": [{"code": self.code, "level": "ERROR", "message": self.message}],
                "metadata": None,
            },
            status_code=self.status,
        )


class ApproverInputValue(BaseModel):
    """One approver input as Harness sends it."""

    name: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=4096)


class ActivityRequest(BaseModel):
    """Harness's approval activity body (camelCase or the v1 API's snake_case)."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["APPROVE", "REJECT"]
    approver_inputs: list[ApproverInputValue] = Field(
        default_factory=list, validation_alias=AliasChoices("approverInputs", "approver_inputs")
    )
    comments: str | None = Field(None, max_length=4096)


async def _body(request: Request) -> ActivityRequest:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":  # a form post (curl -d without -H) is not a vote
        raise HarnessError(415, "INVALID_REQUEST", "send the body as JSON (Content-Type: application/json)")
    try:
        body = ActivityRequest.model_validate(json.loads(await request.body() or b"null"))
    except RecursionError:  # nested deeper than the parser goes: not JSON it can read, not an internal error
        raise HarnessError(400, "INVALID_REQUEST", "the body is not JSON") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise HarnessError(400, "INVALID_REQUEST", f"{field}: {first['msg']}") from None
        raise HarnessError(400, "INVALID_REQUEST", "the body is not JSON") from None
    if (field := model_nul_field(body)) is not None:  # PostgreSQL's text cannot hold it
        raise HarnessError(400, "INVALID_REQUEST", f"{field}: {NUL_PROBLEM}")
    return body


async def _authenticate(context: ApiContext, request: Request, gate_ids: list[str]) -> Principal:
    """The user of the personal API token in `x-api-key`; a refusal is audited on the gates the request names."""
    keys = request.headers.getlist("x-api-key")
    key = keys[0] if keys else None
    try:
        if len(keys) > 1:  # two tokens (of two users, say) leave open who is calling
            raise AuthenticationFailed("invalid_token", "send one x-api-key header, not several")
        if not key:
            raise AuthenticationFailed("missing_credentials", "no x-api-key header: send a personal API token")
        if not key.startswith(TOKEN_PREFIX):
            raise AuthenticationFailed("invalid_token", "x-api-key must be a personal API token (sgf_…)")
        return await context.authenticator.authenticate(f"Bearer {key}")
    except AuthenticationFailed as failure:
        metrics.AUTHENTICATION_FAILURES.labels(failure.reason).inc()
        async with context.pool.acquire() as conn:
            for gate_id in gate_ids:
                if await context.approval.gate_status(conn, gate_id) is not None:
                    await context.api.record_denial(
                        conn,
                        gate_id=gate_id,
                        reason=failure.reason,
                        actor=None,
                        credential="x-api-key",
                        detail={"detail": failure.detail, "path": request.url.path, "method": request.method},
                        at=context.clock(),
                    )
        log.info("request_unauthenticated", path=request.url.path, reason=failure.reason)
        raise HarnessError(401, "INVALID_TOKEN", f"Token is not valid: {failure.detail}") from None
    except IdentityProviderUnavailable:
        raise HarnessError(503, "SERVICE_UNAVAILABLE", "the identity provider cannot be reached") from None


async def _instance(
    context: ApiContext, conn: asyncpg.Connection, row: asyncpg.Record, principal: Principal
) -> dict[str, Any]:
    """A gate as Harness's approval instance."""
    votes = await context.approval.votes_of(conn, [row["id"]])
    detail = gates.detail(
        row, votes, user=principal.user, now=context.clock(), base_url=context.base_url, catalog=context.catalog
    )
    return {
        "id": detail.gate_id,
        "type": "HarnessApproval",
        "status": STATUS.get(detail.status, detail.status.upper()),
        "deadline": int(detail.expires_at.timestamp() * 1000),
        "details": {
            "approvalMessage": detail.message,
            "includePipelineExecutionHistory": bool(detail.history),
            "approvers": {
                "userGroups": detail.groups,
                "minimumCount": sum(rule.minimum_count for rule in detail.policy.rules),
                "disallowPipelineExecutor": detail.policy.disallow_pipeline_executor,
            },
            "approverInputs": [{"name": i.name, "defaultValue": i.default_value} for i in detail.inputs],
            "approvalActivities": [
                {
                    "user": {"name": vote.approver, "email": vote.approver_email},
                    "approvalAction": "APPROVE" if vote.status is DecisionStatus.APPROVED else "REJECT",
                    "approverInputs": [{"name": k, "value": v} for k, v in sorted(vote.inputs.items())],
                    "comments": vote.comment,
                    "approvedAt": int(vote.decided_at.timestamp() * 1000),
                }
                for vote in detail.votes
            ],
        },
        "planExecutionId": detail.execution_id,
        "pipelineIdentifier": detail.pipeline_id,
        "stageIdentifier": detail.stage_id,
        "stepIdentifier": detail.step_id,
        "createdAt": int(detail.opened_at.timestamp() * 1000),
        "lastModifiedAt": int((detail.closed_at or detail.opened_at).timestamp() * 1000),
        "url": detail.links.page,
    }


async def _act(context: ApiContext, principal: Principal, gate_id: str, body: ActivityRequest) -> dict[str, Any]:
    """Harness's checks in its order -- already acted, self-approval, membership -- then the vote."""
    async with context.pool.acquire() as conn:
        row = await context.approval.find_gate(conn, gate_id)
        if row is None:
            raise HarnessError(404, "RESOURCE_NOT_FOUND", f"Approval instance {gate_id} not found")
        if row["status"] == "pending":
            votes = await context.approval.votes_of(conn, [gate_id])
            if any(user_key(vote["approver"]) == user_key(principal.user) for vote in votes):
                # Harness lets nobody act twice on one approval (signoff's other sources may change a vote).
                await context.api.record_denial(
                    conn,
                    gate_id=gate_id,
                    reason="already_acted",
                    actor=principal.user,
                    credential=principal.credential_id,
                    detail={"detail": "Harness's API: one activity per user", "action": body.action},
                    at=context.clock(),
                )
                raise HarnessError(400, "INVALID_REQUEST", f"User {principal.user} has already approved or rejected")
    decision = models.DecisionRequest(
        status=DecisionStatus.APPROVED if body.action == "APPROVE" else DecisionStatus.REJECTED,
        comment=body.comments or "",
        inputs={item.name: item.value for item in body.approver_inputs},
    )
    try:
        await context.decisions.decide(principal, gate_id, decision, None)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise HarnessError(503, "SERVICE_UNAVAILABLE", problem.detail) from None
        text = _REFUSAL_TEXT.get(problem.code, "The approval activity was refused")
        raise HarnessError(400, "INVALID_REQUEST", f"{text} ({problem.code}: {problem.detail})") from None
    async with context.pool.acquire() as conn:
        row = await context.approval.find_gate(conn, gate_id)
        assert row is not None
        return await _instance(context, conn, row, principal)


@router.post("/approvals/{approval_instance_id}/harness/activity")
async def add_activity(request: Request, approval_instance_id: str) -> JSONResponse:
    """Approve or reject the approval instance (the gate) `approval_instance_id`."""
    context: ApiContext = request.app.state.context
    try:
        principal = await _authenticate(context, request, [approval_instance_id])
        body = await _body(request)
        instance = await _act(context, principal, approval_instance_id, body)
    except HarnessError as error:
        return error.response()
    return JSONResponse({"status": "SUCCESS", "data": instance, "metaData": None, "correlationId": str(uuid.uuid4())})


async def _gates_of_execution(context: ApiContext, execution_id: str) -> list[asyncpg.Record]:
    async with context.pool.acquire() as conn:
        return list(await context.approval.gates_of_execution(conn, execution_id))


@router.post("/v1/orgs/{org}/projects/{project}/approvals/execution/{execution_id}")
async def act_on_execution(request: Request, org: str, project: str, execution_id: str) -> JSONResponse:
    """Approve or reject the one waiting approval of execution `execution_id`."""
    context: ApiContext = request.app.state.context
    try:
        rows = await _gates_of_execution(context, execution_id)
        waiting = [row for row in rows if row["status"] == "pending"]
        principal = await _authenticate(context, request, [row["id"] for row in waiting])
        body = await _body(request)
        if not waiting:
            raise HarnessError(400, "INVALID_REQUEST", f"No approval is waiting in execution {execution_id}")
        if len(waiting) > 1:
            ids = ", ".join(row["id"] for row in waiting)
            raise HarnessError(
                400,
                "INVALID_REQUEST",
                f"{len(waiting)} approvals are waiting in execution {execution_id} ({ids}): act on one with "
                "/pipeline/api/approvals/{approvalInstanceId}/harness/activity",
            )
        instance = await _act(context, principal, waiting[0]["id"], body)
    except HarnessError as error:
        return error.response()
    return JSONResponse({**instance, "org": org, "project": project})


@router.get("/v1/orgs/{org}/projects/{project}/approvals/execution/{execution_id}")
async def list_approvals(
    request: Request,
    org: str,
    project: str,
    execution_id: str,
    approval_status: Annotated[str | None, Query()] = None,
    approval_type: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """The execution's approvals (only those in `approval_status` / of `approval_type` when given; Harness's values
    of either, others are refused in Harness's error shape), with their inputs."""
    context: ApiContext = request.app.state.context
    try:
        principal = await _authenticate(context, request, [])
        if approval_status is not None and approval_status not in HARNESS_APPROVAL_STATUSES:
            raise HarnessError(
                400, "INVALID_REQUEST", f"approval_status: one of {', '.join(HARNESS_APPROVAL_STATUSES)}"
            )
        if approval_type is not None and approval_type not in HARNESS_APPROVAL_TYPES:
            raise HarnessError(400, "INVALID_REQUEST", f"approval_type: one of {', '.join(HARNESS_APPROVAL_TYPES)}")
        if approval_type not in (None, "HarnessApproval"):
            return JSONResponse([])  # signoff's approvals are all HarnessApproval
        rows = await _gates_of_execution(context, execution_id)
        async with context.pool.acquire() as conn:
            instances = [
                {**await _instance(context, conn, row, principal), "org": org, "project": project}
                for row in rows
                if approval_status is None or STATUS.get(row["status"]) == approval_status
            ]
    except HarnessError as error:
        return error.response()
    return JSONResponse(instances)
