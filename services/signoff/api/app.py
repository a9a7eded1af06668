"""The api's HTTP application: `/api/v1` (JSON, OpenAPI 3.1 at /api/v1/openapi.json), every route authenticated.

FastAPI on uvicorn: the OpenAPI document comes from the same pydantic models that validate the requests, and errors
are RFC 9457 problem documents with the approval service's reason codes. No route writes the approval tables.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff import __version__
from signoff import contracts as wire
from signoff.api import audit, codepipeline, gates, harness, metrics, models
from signoff.api.decisions import DecisionDesk
from signoff.api.executions import ExecutionDesk
from signoff.api.identity import AuthenticationFailed, Authenticator, IdentityProviderUnavailable, Principal
from signoff.api.pages import PageSettings
from signoff.api.pages import router as pages_router
from signoff.api.problems import PROBLEM_TYPE, ApiProblem, refuse_nul
from signoff.api.repository import ApiRepository
from signoff.api.slack import SlackDesk
from signoff.api.slack import router as slack_router
from signoff.approval.repository import ApprovalRepository
from signoff.catalog import Catalog
from signoff.contracts.events import CodePipelineApprovalResult
from signoff.kernel import user_key

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
OPENAPI_URL = f"{PREFIX}/openapi.json"


@dataclass
class ApiContext:
    """What the routes use: the pool (approval + executor schemas read-only, the api schema read-write), identity,
    the decision and execution desks, the catalog and the clock."""

    pool: asyncpg.Pool
    authenticator: Authenticator
    decisions: DecisionDesk
    executions: ExecutionDesk
    catalog: Catalog
    base_url: str
    max_body_bytes: int
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    pages: PageSettings | None = None
    slack: SlackDesk | None = None
    """Slack's interactivity (`POST /slack/interactions`), when configured."""
    approval: ApprovalRepository = field(default_factory=ApprovalRepository)
    api: ApiRepository = field(default_factory=ApiRepository)


_bearer = HTTPBearer(
    auto_error=False,
    description="An OIDC access token (JWT) of the configured issuer, or a personal API token (`sgf_…`).",
)


def _problem_response(problem: ApiProblem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.document(request.url.path), status_code=problem.status, media_type=PROBLEM_TYPE, headers=problem.headers
    )


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class RequestGuard:
    """Refuses, before the app sees it: a URL with a NUL character in its path or query (400: no id or filter holds
    one, and PostgreSQL's text cannot), a body of `/api/v1` that is not JSON by its Content-Type (415: it would
    otherwise be read as no object at all, a misleading 422), and a request body over `limit` bytes (413), by
    Content-Length or while it streams in (chunked)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for part, holds_nul in (("path", "\x00" in scope["path"]), ("query", b"%00" in scope["query_string"])):
            if holds_nul:
                problem = f"the URL's {part} {wire.NUL_PROBLEM}"
                invalid = ApiProblem(400, "invalid_request", problem, errors=[{"field": part, "message": problem}])
                await self._refuse(invalid, scope, send)
                return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        too_large = ApiProblem(413, "too_large", f"the request body is over {self.limit} bytes")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(too_large, scope, send)
            return
        has_body = (length is not None and length not in (b"0", b"")) or b"transfer-encoding" in headers
        if scope["path"].startswith(f"{PREFIX}/") and has_body and not _is_json(headers.get(b"content-type")):
            message = "send the body as JSON (Content-Type: application/json)"
            unsupported = ApiProblem(
                415, "unsupported_media_type", message, errors=[{"field": "Content-Type", "message": message}]
            )
            await self._refuse(unsupported, scope, send)
            return
        # The body is read here, before the app sees any of it (at most `limit` bytes are held): an error raised
        # from inside the app's receive() would be turned into FastAPI's 400 "error parsing the body".
        messages: list[Message] = []
        seen, more = 0, True
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees that
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(too_large, scope, send)
                return
            more = message.get("more_body", False)

        async def replayed() -> Message:
            return messages.pop(0) if messages else await receive()

        if not scope["path"].startswith(f"{PREFIX}/"):
            await self.app(scope, replayed, send)
            return

        async def uncached(message: Message) -> None:
            # The API's answers carry gate tokens, comments and script output: no cache keeps them.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, replayed, uncached)

    @staticmethod
    async def _refuse(problem: ApiProblem, scope: Scope, send: Send) -> None:
        body = JSONResponse(problem.document(scope.get("path")), status_code=problem.status, media_type=PROBLEM_TYPE)
        await body(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


async def _principal(request: Request, _credentials: Annotated[Any, Security(_bearer)] = None) -> Principal:
    """The request's authenticated principal; 401 (audited when the path names a gate) otherwise."""
    context: ApiContext = request.app.state.context
    try:
        return await context.authenticator.authenticate(_authorization(request))
    except AuthenticationFailed as failure:
        gate_id = request.path_params.get("gate_id")
        if gate_id:
            async with context.pool.acquire() as conn:
                # Only a gate that exists gets the entry: an unauthenticated client must not fill the table at will.
                if await context.approval.gate_status(conn, gate_id) is not None:
                    await context.api.record_denial(
                        conn,
                        gate_id=gate_id,
                        reason=failure.reason,
                        actor=None,
                        credential=None,
                        detail={"detail": failure.detail, "path": request.url.path, "method": request.method},
                        at=context.clock(),
                    )
        metrics.AUTHENTICATION_FAILURES.labels(failure.reason).inc()
        log.info("request_unauthenticated", path=request.url.path, reason=failure.reason, gate_id=gate_id)
        raise ApiProblem(
            401, failure.reason, failure.detail, headers={"WWW-Authenticate": failure.www_authenticate()}
        ) from None
    except IdentityProviderUnavailable as exc:
        log.warning("identity_provider_unavailable", error=str(exc))
        raise ApiProblem(503, "identity_provider_unavailable", "the identity provider cannot be reached") from None


Caller = Annotated[Principal, Security(_principal)]


def _authorization(request: Request) -> str | None:
    """The request's one `Authorization` header; two (say, the tokens of two users) leave open who is calling, so
    the request proves nobody."""
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise AuthenticationFailed("invalid_token", "send one Authorization header, not several")
    return values[0] if values else None


def _cursor(opened_at: datetime, gate_id: str) -> str:
    return base64.urlsafe_b64encode(f"{opened_at.isoformat()}|{gate_id}".encode()).decode()


def _parse_cursor(value: str | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(value.encode()).decode()
        if "\x00" in decoded:
            raise ValueError("no cursor of this api holds a NUL (nor can PostgreSQL's text)")
        opened, _, gate_id = decoded.partition("|")
        return datetime.fromisoformat(opened), gate_id
    except ValueError:
        raise ApiProblem(
            400,
            "invalid_cursor",
            "`after` is not a cursor this api returned",
            errors=[{"field": "after", "message": "invalid cursor"}],
        ) from None


def _field_error(error: Mapping[str, Any]) -> dict[str, str]:
    """One of FastAPI's validation errors as {field, message}. A body that is not JSON is located by a character
    offset (`("body", 22)`), which is not a field: the field is `body` and the offset goes into the message."""
    if error.get("type") == "json_invalid":
        offset = next((part for part in error["loc"] if isinstance(part, int)), None)
        where = "" if offset is None else f" at character {offset}"
        return {"field": "body", "message": f"not valid JSON{where}: {error['ctx'].get('error', error['msg'])}"}
    return {"field": ".".join(str(p) for p in error["loc"] if p != "body") or "body", "message": error["msg"]}


def create_app(context: ApiContext | None) -> FastAPI:
    """The application around `context` (built in the role's lifespan; tests build it the same way). Without a
    context it only describes itself (`openapi_document`)."""
    app = FastAPI(
        title="signoff API",
        version=__version__,
        description="Approval gates for CD pipelines: read gates, decide them as yourself, start and abort "
        "executions. Every request carries `Authorization: Bearer <OIDC access token | personal API token>`. "
        "Errors are RFC 9457 problem documents (`application/problem+json`) whose `code` is a reason such as "
        "`not_eligible`, `self_approval`, `gate_closed`, `stale_token`, `invalid_inputs` or `unauthenticated`.",
        openapi_url=OPENAPI_URL,
        docs_url=None,  # the interactive pages load assets from the internet; the document is enough
        redoc_url=None,
        responses={
            400: {"model": models.Problem, "description": "`malformed_body` (not JSON) or `invalid_cursor`."},
            401: {"model": models.Problem, "description": "No, expired, revoked or invalid credentials."},
            413: {"model": models.Problem, "description": "`too_large`: a body over SIGNOFF_API_MAX_BODY_BYTES."},
            415: {"model": models.Problem, "description": "`unsupported_media_type`: a body that is not JSON."},
            422: {"model": models.Problem, "description": "The request names a field with a problem."},
        },
    )
    app.state.context = context
    if context is not None:
        app.add_middleware(RequestGuard, limit=context.max_body_bytes)

    @app.middleware("http")
    async def _measured(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, problem: ApiProblem) -> JSONResponse:
        return _problem_response(problem, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(error) for error in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        status = 400 if any(error.get("type") == "json_invalid" for error in exc.errors()) else 422
        code = "malformed_body" if status == 400 else "invalid_request"
        return _problem_response(
            ApiProblem(status, code, f"{first['field']}: {first['message']}", errors=errors), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            code = "malformed_body"  # FastAPI's answer to JSON its parser gave up on (nested too deep, say)
        return _problem_response(ApiProblem(exc.status_code, code, str(exc.detail)), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request_failed", path=request.url.path, method=request.method)
        return _problem_response(
            ApiProblem(500, "internal_error", "something went wrong; it is in the api's log"), request
        )

    @app.get(f"{PREFIX}/me", response_model=models.Me, tags=["identity"])
    async def me(caller: Caller) -> models.Me:
        """Who the credential proves you are."""
        return models.Me(user=caller.user, credential=caller.credential, permissions=sorted(caller.permissions))

    # ------------------------------------------------------------------------------------------------ gates

    @app.get(f"{PREFIX}/gates", response_model=models.GateList, tags=["gates"])
    async def list_gates(
        caller: Caller,
        status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|expired|cancelled)$")] = None,
        group: Annotated[str | None, Query(max_length=128)] = None,
        pipeline: Annotated[str | None, Query(max_length=128)] = None,
        mine: Annotated[bool, Query(description="Only pending gates you may decide now.")] = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        after: Annotated[str | None, Query(description="The `next` cursor of the previous page.")] = None,
    ) -> models.GateList:
        """Gates, newest first."""
        if mine and status not in (None, "pending"):
            message = "mine=true lists the pending gates you may decide: leave status out, or drop mine"
            raise ApiProblem(422, "invalid_request", message, errors=[{"field": "status", "message": message}])
        before = _parse_cursor(after)
        async with context.pool.acquire() as conn:
            if mine:
                rows = await context.approval.decidable_by(
                    conn, user_key(caller.user), limit=limit, before=before, pipeline=pipeline, group=group
                )
            else:
                rows = await context.approval.list_gates(
                    conn, status=status, group=group, pipeline=pipeline, limit=limit, before=before
                )
        now = context.clock()
        listed = [gates.summary(row, now=now, base_url=context.base_url) for row in rows]
        cursor = _cursor(rows[-1]["opened_at"], rows[-1]["id"]) if len(rows) == limit else None
        return models.GateList(gates=listed, next=cursor)

    async def _gate_or_404(conn: asyncpg.Connection, gate_id: str) -> asyncpg.Record:
        row = await context.approval.find_gate(conn, gate_id)
        if row is None:
            raise ApiProblem(404, "unknown_gate", f"no gate {gate_id}")
        return row

    @app.get(f"{PREFIX}/gates/{{gate_id}}", response_model=models.GateDetail, tags=["gates"])
    async def get_gate(caller: Caller, gate_id: str) -> models.GateDetail:
        """One gate: the message, the stages' metadata resolved, the policy's progress, inputs, votes, your turn."""
        async with context.pool.acquire() as conn:
            row = await _gate_or_404(conn, gate_id)
            votes = await context.approval.votes_of(conn, [gate_id])
        return gates.detail(
            row, votes, user=caller.user, now=context.clock(), base_url=context.base_url, catalog=context.catalog
        )

    @app.post(
        f"{PREFIX}/gates/{{gate_id}}/decisions",
        response_model=models.DecisionAnswer,
        tags=["gates"],
        responses={
            202: {"model": models.DecisionAnswer, "description": "Sent; no answer within the wait."},
            403: {"model": models.Problem, "description": "`not_eligible`, `self_approval`, `not_permitted`."},
            404: {"model": models.Problem, "description": "`unknown_gate`."},
            409: {"model": models.Problem, "description": "`gate_closed`, `stale_token`, `duplicate`."},
        },
    )
    async def decide(
        caller: Caller,
        gate_id: str,
        body: models.DecisionRequest,
        idempotency_key: Annotated[
            str | None,
            Header(max_length=256, description="Repeat a request safely: the same key gets the first answer."),
        ] = None,
    ) -> JSONResponse:
        """Vote on a gate as yourself; answers with the approval service's verdict."""
        status, answer = await context.decisions.decide(caller, gate_id, body, idempotency_key)
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)

    @app.post(
        f"{PREFIX}/approval-results",
        response_model=models.DecisionAnswer,
        tags=["gates"],
        responses={404: {"model": models.Problem, "description": "`unknown_gate`: no gate has that token."}},
    )
    async def put_approval_result(
        caller: Caller,
        body: CodePipelineApprovalResult,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    ) -> JSONResponse:
        """CodePipeline's `put-approval-result` input (pipelineName, stageName, actionName, token, result): the
        gate is the one of that action holding the token."""
        refuse_nul(body, "invalid_request")
        if len(body.result.summary) > codepipeline.SUMMARY_MAX:
            message = f"at most {codepipeline.SUMMARY_MAX} characters (as CodePipeline's put-approval-result)"
            raise ApiProblem(
                422,
                "invalid_request",
                f"result.summary: {message}",
                errors=[{"field": "result.summary", "message": message}],
            )
        async with context.pool.acquire() as conn:
            row = await context.approval.find_gate_by_token(
                conn, body.pipeline_name, body.stage_name, body.action_name, body.token
            )
        if row is None:
            raise ApiProblem(
                404,
                "unknown_gate",
                f"no gate of {body.pipeline_name}/{body.stage_name}/{body.action_name} has that token",
            )
        request = models.DecisionRequest(status=body.result.status, comment=body.result.summary, token=body.token)
        status, answer = await context.decisions.decide(caller, row["id"], request, idempotency_key)
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)

    @app.post(f"{PREFIX}/decisions/bulk", response_model=models.BulkAnswer, tags=["gates"])
    async def decide_many(caller: Caller, body: models.BulkRequest) -> models.BulkAnswer:
        """Up to 100 votes at once; a result per item (each as its own request would answer)."""
        return await context.decisions.decide_many(caller, body.decisions)

    @app.get(f"{PREFIX}/gates/{{gate_id}}/audit", response_model=models.AuditTrail, tags=["gates"])
    async def gate_audit(caller: Caller, gate_id: str) -> models.AuditTrail:
        """The gate's audit trail: request, votes, refusals (also the api's own), outcome."""
        async with context.pool.acquire() as conn:
            await _gate_or_404(conn, gate_id)
            rows = await context.approval.audit_of_gate(conn, gate_id)
            votes = await context.approval.votes_of(conn, [gate_id])
            denials = await context.api.denials_of_gate(conn, gate_id)
        return audit.trail(gate_id, rows, votes, denials)

    # ------------------------------------------------------------------------------------------------ executions

    @app.get(f"{PREFIX}/executions", response_model=list[models.ExecutionSummary], tags=["executions"])
    async def list_executions(
        caller: Caller,
        pipeline: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[models.ExecutionSummary]:
        """Executions, newest first."""
        return await context.executions.list(pipeline, limit)

    @app.post(f"{PREFIX}/executions", response_model=models.ExecutionStarted, status_code=201, tags=["executions"])
    async def start_execution(caller: Caller, body: models.ExecutionRequest) -> models.ExecutionStarted:
        """Start a pipeline as yourself (you are its triggerer)."""
        return await context.executions.start(caller, body)

    @app.get(f"{PREFIX}/executions/{{execution_id}}", response_model=models.ExecutionDetail, tags=["executions"])
    async def get_execution(caller: Caller, execution_id: str) -> models.ExecutionDetail:
        return await context.executions.get(execution_id)

    @app.get(f"{PREFIX}/executions/{{execution_id}}/logs", response_model=models.ExecutionLogs, tags=["executions"])
    async def execution_logs(caller: Caller, execution_id: str) -> models.ExecutionLogs:
        """The output of each script the execution ran: for who started it, an approver of its gates or an admin."""
        return await context.executions.logs(caller, execution_id)

    @app.post(
        f"{PREFIX}/executions/{{execution_id}}/abort",
        response_model=models.ExecutionDetail,
        tags=["executions"],
        responses={403: {"model": models.Problem}, 404: {"model": models.Problem}, 409: {"model": models.Problem}},
    )
    async def abort_execution(
        caller: Caller, execution_id: str, body: models.AbortRequest | None = None
    ) -> JSONResponse:
        """Abort a running execution: allowed for whoever started it and for admins."""
        status, detail = await context.executions.abort(caller, execution_id, body.reason if body else "")
        return JSONResponse(detail.model_dump(mode="json"), status_code=status)

    @app.get(f"{PREFIX}/pipelines/{{name}}/state", tags=["executions"])
    async def get_pipeline_state(caller: Caller, name: str) -> dict[str, Any]:
        """CodePipeline's `get-pipeline-state` document of the pipeline's latest execution (with the token of a
        waiting approval)."""
        return await context.executions.pipeline_state(name)

    app.include_router(codepipeline.router)  # CodePipeline's wire API (POST /, SigV4): docs/codepipeline.md
    app.include_router(harness.router)  # Harness's approval API (x-api-key): docs/harness-api.md
    app.include_router(slack_router)  # Slack's interactivity request URL: signoff.api.slack
    app.include_router(pages_router)  # the approval pages (/, /gates/{id}, sign-in): signoff.api.pages
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of /api/v1 (committed as schemas/openapi.json, served at /api/v1/openapi.json)."""
    return create_app(None).openapi()
