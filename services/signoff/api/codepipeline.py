"""CodePipeline's wire API on `signoff api`, so the real AWS CLI and SDKs work with `--endpoint-url` alone
(docs/codepipeline.md): AWS JSON 1.1 -- `POST /` with `X-Amz-Target: CodePipeline_20150709.<Operation>` -- signed
with an access key (Signature Version 4, proven by Authenticator.authenticate_signed).

Shapes follow botocore's service model (botocore/data/codepipeline/2015-07-09/service-2.json): pipelines are
signoff's pipelines (those that have run), stages their stages, actions their steps. A vote goes the way of every
api vote (DecisionDesk): the approval service judges it, and its refusals become CodePipeline's errors. Errors are
HTTP 400 (403 for credentials) with `{"__type": …, "message": …}`, as CodePipeline sends them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from fastapi import APIRouter, Request, Response

from signoff.api import gates, metrics, models, sigv4
from signoff.api.identity import Principal
from signoff.api.problems import ApiProblem
from signoff.contracts.events import DecisionStatus
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.state import ExecutionStatus
from signoff.executor.views import epoch, pipeline_state

if TYPE_CHECKING:
    from signoff.api.app import ApiContext

log = structlog.get_logger(__name__)

router = APIRouter()

TARGET_PREFIX = "CodePipeline_20150709."
CONTENT_TYPE = "application/x-amz-json-1.1"
# service-2.json's constraints.
_NAME = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")
_EXECUTION_ID = re.compile(r"^[0-9a-zA-Z-_.:]{1,200}$")
# signoff's approval tokens are URL-safe random text (not CodePipeline's UUIDs): anything else is no token.
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,256}$")
SUMMARY_MAX = 512
"""CodePipeline's limit on `result.summary` (also that of /api/v1/approval-results)."""
EXECUTION_STATUS = {
    ExecutionStatus.RUNNING: "InProgress",
    ExecutionStatus.SUCCEEDED: "Succeeded",
    ExecutionStatus.FAILED: "Failed",
    ExecutionStatus.ABORTED: "Stopped",
}
# The approval service's refusals CodePipeline has a name for; every other one is a ValidationException.
_REFUSAL_ERRORS = {
    "gate_closed": "ApprovalAlreadyCompletedException",
    "stale_token": "InvalidApprovalTokenException",
}


class AwsError(Exception):
    """An error answer in CodePipeline's form."""

    def __init__(self, error: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error, self.message, self.status = error, message, status

    def response(self) -> Response:
        return _json_response({"__type": self.error, "message": self.message}, self.status)


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def _invalid(field: str, value: object, constraint: str) -> AwsError:
    try:
        shown = json.dumps(value)
    except RecursionError:  # a value nested about as deep as json.loads allows
        shown = "(too deeply nested)"
    return AwsError(
        "ValidationException",
        f"1 validation error detected: Value {shown} at '{field}' failed to satisfy constraint: "
        f"Member must {constraint}",
    )


def _string(params: dict[str, Any], field: str, pattern: re.Pattern[str], *, required: bool = True) -> str | None:
    value = params.get(field)
    if value is None:
        if required:
            raise _invalid(field, None, "not be null")
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(field, value, f"satisfy regular expression pattern: {pattern.pattern}")
    return value


def _max_results(params: dict[str, Any], maximum: int) -> int:
    value = params.get("maxResults", maximum)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise _invalid("maxResults", value, f"have value between 1 and {maximum}")
    return value


def _page_token(params: dict[str, Any]) -> str | None:
    value = params.get("nextToken")
    if value is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(str(value).encode()).decode()
    except (ValueError, binascii.Error):
        decoded = "\x00"
    if "\x00" in decoded:  # not valid base64, or holds what no token of this api does (nor PostgreSQL's text)
        raise AwsError("InvalidNextTokenException", "The next token was specified in an invalid format.")
    return decoded


def _next_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def _headers(request: Request) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.scope["headers"]]


@router.post("/", include_in_schema=False)
async def codepipeline(request: Request) -> Response:
    """Every CodePipeline operation: authenticate the signature, then dispatch on X-Amz-Target."""
    context: ApiContext = request.app.state.context
    body = await request.body()
    try:
        principal = await _authenticate(context, request, body)
        target = request.headers.get("x-amz-target", "")
        operation = OPERATIONS.get(target.removeprefix(TARGET_PREFIX)) if target.startswith(TARGET_PREFIX) else None
        if operation is None:
            raise AwsError("UnknownOperationException", f"Unknown operation {target or '(no X-Amz-Target)'}")
        params = _params(body)
        if params is _NOT_JSON:
            raise AwsError("SerializationException", "The request body is not valid JSON.")
        if not isinstance(params, dict):
            raise AwsError("SerializationException", "The request body must be a JSON object.")
        return _json_response(await operation(context, principal, params, request))
    except AwsError as error:
        log.info("codepipeline_refused", error=error.error, status=error.status)
        return error.response()


_NOT_JSON = object()


def _params(body: bytes) -> Any:
    """The request's JSON (`{}` when empty); _NOT_JSON when it is not JSON, or nested deeper than the parser goes
    (a RecursionError is no internal error: the body is refused like any other that does not parse)."""
    try:
        return json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return _NOT_JSON


async def _authenticate(context: ApiContext, request: Request, body: bytes) -> Principal:
    headers = _headers(request)
    try:
        return await context.authenticator.authenticate_signed(
            method=request.method,
            raw_path=request.scope.get("raw_path", b"/").decode("latin-1") or "/",
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
    except sigv4.SignatureRefused as refused:
        metrics.AUTHENTICATION_FAILURES.labels(refused.error).inc()
        await _audit_refused_signature(context, refused, body, request)
        raise AwsError(refused.error, refused.message, 403) from None


async def _audit_refused_signature(
    context: ApiContext, refused: sigv4.SignatureRefused, body: bytes, request: Request
) -> None:
    """A request refused for its credentials that names a gate (PutApprovalResult's pipeline, stage, action and
    token) is in that gate's audit trail, with the access key it claimed."""
    params = _params(body)
    if not isinstance(params, dict):
        return
    async with context.pool.acquire() as conn:
        row = await _named_gate(context, conn, params)
        if row is None:
            return
        credential = None
        if refused.access_key_id is not None:
            key = await context.api.access_key_with_secret(conn, refused.access_key_id)
            owner = f" (of {key.user_id})" if key is not None else " (unknown)"
            credential = f"access key {refused.access_key_id}{owner}"
        await context.api.record_denial(
            conn,
            gate_id=row["id"],
            reason=refused.error,
            actor=None,
            credential=credential,
            detail={
                "detail": refused.message,
                "path": request.url.path,
                "method": request.method,
                "target": request.headers.get("x-amz-target"),
            },
            at=context.clock(),
        )


async def _named_gate(context: ApiContext, conn: asyncpg.Connection, params: dict[str, Any]) -> asyncpg.Record | None:
    """The gate a PutApprovalResult input names: the one of that action holding the token, else the action's
    latest gate; None when the input names no action that has a gate (nor can: not a name PutApprovalResult
    takes)."""
    names = [params.get(field) for field in ("pipelineName", "stageName", "actionName")]
    if not all(isinstance(name, str) and _NAME.fullmatch(name) for name in names):
        return None
    pipeline, stage, action = names
    token = params.get("token")
    row = None
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        row = await context.approval.find_gate_by_token(conn, pipeline, stage, action, token)
    return row or await context.approval.latest_gate_of_step(conn, pipeline, stage, action)


def _not_found(name: str) -> AwsError:
    return AwsError("PipelineNotFoundException", f"No pipeline named {name!r} (a pipeline is known once it has run)")


# ---------------------------------------------------------------------------------------------------- operations

Operation = Callable[["ApiContext", Principal, dict[str, Any], Request], Awaitable[dict[str, Any]]]


async def get_pipeline_state(
    context: ApiContext, principal: Principal, params: dict[str, Any], request: Request
) -> dict[str, Any]:
    """The latest execution's stages and actions; a waiting approval shows its token, and links to its gate."""
    name = _string(params, "name", _NAME)
    assert name is not None
    repository = context.executions.repository
    async with context.pool.acquire() as conn:
        row = await repository.latest_execution(conn, name)
        if row is None:
            raise _not_found(name)
        gate_rows = list(await repository.gates_of(conn, row["id"]))
    state = pipeline_state(row, gate_rows)
    for stage in state["stageStates"]:
        for action in stage["actionStates"]:
            latest = action.get("latestExecution", {})
            if "externalExecutionId" in latest:
                page = gates.links(context.base_url, latest["externalExecutionId"]).page
                latest["externalExecutionUrl"] = action["entityUrl"] = page
    return {key: state[key] for key in ("pipelineName", "pipelineVersion", "stageStates", "created", "updated")}


async def put_approval_result(
    context: ApiContext, principal: Principal, params: dict[str, Any], request: Request
) -> dict[str, Any]:
    """The caller's vote on the approval holding the token; `approvedAt` once the approval service counted it."""
    pipeline = _string(params, "pipelineName", _NAME)
    stage = _string(params, "stageName", _NAME)
    action = _string(params, "actionName", _NAME)
    token = _string(params, "token", _TOKEN)
    result = params.get("result")
    if not isinstance(result, dict):
        raise _invalid("result", result, "not be null")
    summary, status = result.get("summary"), result.get("status")
    if not isinstance(summary, str) or len(summary) > SUMMARY_MAX:
        raise _invalid("result.summary", summary, f"be a string of at most {SUMMARY_MAX} characters")
    if "\x00" in summary:
        raise _invalid("result.summary", summary, "not contain a NUL character")
    if status not in ("Approved", "Rejected"):
        raise _invalid("result.status", status, "satisfy enum value set: [Approved, Rejected]")
    assert pipeline is not None and stage is not None and action is not None and token is not None
    async with context.pool.acquire() as conn:
        await _action_exists(context, conn, pipeline, stage, action)
        by_token = await context.approval.find_gate_by_token(conn, pipeline, stage, action, token)
        row = by_token or await context.approval.latest_gate_of_step(conn, pipeline, stage, action)
    if row is None:
        raise AwsError("InvalidApprovalTokenException", f"The token is not valid for {pipeline}/{stage}/{action}")
    decision = models.DecisionRequest(status=DecisionStatus(status), comment=summary, token=token)
    try:
        code, answer = await context.decisions.decide(principal, row["id"], decision, _idempotency_key(request))
    except ApiProblem as problem:
        raise _refusal(problem, token_matched=by_token is not None) from None
    if code != 200:
        # Sent, but no verdict within the wait: the CLI retries a 5xx, and the repeat (same invocation id, so the
        # same decision id) answers with the verdict once it is known.
        raise AwsError("ServiceUnavailableException", answer.message, 503)
    async with context.pool.acquire() as conn:
        votes = await context.approval.votes_of(conn, [row["id"]])
    counted = next((vote for vote in votes if vote["decision_id"] == answer.decision_id), None)
    return {"approvedAt": epoch(counted["at"] if counted is not None else context.clock())}


async def _action_exists(context: ApiContext, conn: asyncpg.Connection, pipeline: str, stage: str, action: str) -> None:
    """PipelineNotFound / StageNotFound / ActionNotFound, by the pipeline's latest run."""
    row = await context.executions.repository.latest_execution(conn, pipeline)
    if row is None:
        raise _not_found(pipeline)
    plan = Execution.from_dict(row["state"]).plan
    stages = {planned.identifier: planned for planned in plan.stages()}
    if stage not in stages:
        raise AwsError("StageNotFoundException", f"Pipeline {pipeline!r} has no stage {stage!r}")
    if action not in {step.identifier for step in stages[stage].steps()}:
        raise AwsError("ActionNotFoundException", f"Stage {stage!r} of {pipeline!r} has no action {action!r}")


def _idempotency_key(request: Request) -> str:
    """The same decision for a retried request: botocore keeps `amz-sdk-invocation-id` across the retries of one
    call and changes it for the next call (so running the command again is a new vote). Without it, the signature
    names the request: only a replay of the very same signed request repeats. The key is per user, and the
    DecisionDesk refuses a key reused for a different request."""
    invocation = request.headers.get("amz-sdk-invocation-id")
    if invocation:
        return f"codepipeline:{invocation[:200]}"
    authorization = request.headers.get("authorization", "")
    return f"codepipeline-signature:{authorization.rpartition('Signature=')[2][:64]}"


def _refusal(problem: ApiProblem, *, token_matched: bool) -> AwsError:
    if problem.status >= 500:
        return AwsError("ServiceUnavailableException", problem.detail, 503)
    if problem.code == "gate_closed" and not token_matched:
        return AwsError("InvalidApprovalTokenException", f"The token is not valid: {problem.detail}")
    error = _REFUSAL_ERRORS.get(problem.code, "ValidationException")
    return AwsError(error, f"refused ({problem.code}): {problem.detail}")


async def list_pipelines(
    context: ApiContext, principal: Principal, params: dict[str, Any], request: Request
) -> dict[str, Any]:
    """The pipelines that have run, by name, `maxResults` at a time."""
    limit = _max_results(params, 1000)
    after = _page_token(params)
    async with context.pool.acquire() as conn:
        rows = await context.executions.repository.pipelines_page(conn, after, limit + 1)
    page = rows[:limit]
    answer: dict[str, Any] = {
        "pipelines": [
            {
                "name": row["identifier"],
                "version": 1,
                "pipelineType": "V2",
                "executionMode": "PARALLEL",
                "created": epoch(row["created_at"] or row["updated_at"]),
                "updated": epoch(row["updated_at"]),
            }
            for row in page
        ]
    }
    if len(rows) > limit:
        answer["nextToken"] = _next_token(page[-1]["identifier"])
    return answer


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    triggerer = (row["triggered_by"] or {}).get("user")
    summary: dict[str, Any] = {
        "pipelineExecutionId": row["id"],
        "status": EXECUTION_STATUS.get(row["status"], "InProgress"),
        "startTime": epoch(row["started_at"]),
        "lastUpdateTime": epoch(row["updated_at"]),
        "sourceRevisions": [],
        "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": triggerer or ""},
        "executionMode": "PARALLEL",
    }
    if row["reason"]:
        summary["statusSummary"] = row["reason"]
    return summary


async def list_pipeline_executions(
    context: ApiContext, principal: Principal, params: dict[str, Any], request: Request
) -> dict[str, Any]:
    """The pipeline's executions, newest first, `maxResults` at a time."""
    name = _string(params, "pipelineName", _NAME)
    assert name is not None
    limit = _max_results(params, 100)
    token = _page_token(params)
    if token is not None and not token.isdigit():
        raise AwsError("InvalidNextTokenException", "The next token was specified in an invalid format.")
    repository = context.executions.repository
    async with context.pool.acquire() as conn:
        if await repository.latest_execution(conn, name) is None:
            raise _not_found(name)
        rows = await repository.executions_page(conn, name, int(token) if token else None, limit + 1)
    page = rows[:limit]
    answer: dict[str, Any] = {"pipelineExecutionSummaries": [_summary(row) for row in page]}
    if len(rows) > limit:
        answer["nextToken"] = _next_token(str(page[-1]["sequence_id"]))
    return answer


async def get_pipeline_execution(
    context: ApiContext, principal: Principal, params: dict[str, Any], request: Request
) -> dict[str, Any]:
    """One execution of the pipeline."""
    name = _string(params, "pipelineName", _NAME)
    execution_id = _string(params, "pipelineExecutionId", _EXECUTION_ID)
    assert name is not None and execution_id is not None
    repository = context.executions.repository
    async with context.pool.acquire() as conn:
        if await repository.latest_execution(conn, name) is None:
            raise _not_found(name)
        row = await repository.find_execution(conn, execution_id)
    if row is None or row["pipeline_id"] != name:
        raise AwsError("PipelineExecutionNotFoundException", f"Pipeline {name!r} has no execution {execution_id!r}")
    summary = _summary(row)
    execution: dict[str, Any] = {
        "pipelineName": name,
        "pipelineVersion": 1,
        "pipelineExecutionId": row["id"],
        "status": summary["status"],
        "artifactRevisions": [],
        "variables": [
            {"name": key, "resolvedValue": str(value)}
            for key, value in sorted((row["state"].get("variables") or {}).items())
        ],
        "trigger": summary["trigger"],
        "executionMode": "PARALLEL",
    }
    if "statusSummary" in summary:
        execution["statusSummary"] = summary["statusSummary"]
    return {"pipelineExecution": execution}


OPERATIONS: dict[str, Operation] = {
    "GetPipelineState": get_pipeline_state,
    "PutApprovalResult": put_approval_result,
    "ListPipelines": list_pipelines,
    "ListPipelineExecutions": list_pipeline_executions,
    "GetPipelineExecution": get_pipeline_execution,
}
