"""Slack's interactivity endpoint, `POST /slack/interactions`: Approve / Reject on a gate's Slack message decide as
the directory user who pressed them.

- Every request is verified first (`X-Slack-Signature` over `v0:<timestamp>:<body>` with the signing secret,
  timestamp within 5 minutes, slack_sdk's `SignatureVerifier`); anything else is 401 and nothing is recorded.
- The signed request's digest is remembered: the same request again is acknowledged and ignored (a replay).
- Slack wants an answer within 3 s: the request is acknowledged at once and the work finishes in a background task
  the desk owns (`drain` on shutdown lets them finish, and logs any it had to give up).
- A press (`block_actions`) maps the Slack user to the directory user (`slack:` in the directory). Unknown: an
  ephemeral refusal, audited with the Slack id. Known: the gate must be pending and the user eligible (the
  approval domain's rules, as the approval page asks them), else an ephemeral refusal in words; then the modal
  opens (`views.open` with the press's `trigger_id`).
- A submitted modal (`view_submission`) is checked field by field (errors shown by the fields,
  `response_action: errors`), then decided through `DecisionDesk.decide` as that user, source `slack`: the same
  path and checks as every decision. The modal's view id is the Idempotency-Key, so however often Slack or anyone
  sends it, it is one decision id, one vote. A refusal is an ephemeral message; the message's update is the
  notifier's (it follows the gate's events).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from signoff.api import gates, metrics, models
from signoff.api import slack_views as views
from signoff.api.decisions import DecisionDesk
from signoff.api.identity import Principal
from signoff.api.problems import PROBLEM_TYPE, ApiProblem
from signoff.api.repository import ApiRepository
from signoff.approval.mapping import StoredGate
from signoff.approval.repository import ApprovalRepository
from signoff.kernel import DecisionStatus as KernelStatus

log = structlog.get_logger(__name__)

SOURCE = "slack"
SIGNATURE_WINDOW = timedelta(minutes=5)
TIMESTAMP_DIGITS = 12
"""A signed request's `X-Slack-Request-Timestamp`: Unix seconds, digits only (more than 12 is no time near now)."""
CREDENTIAL = "slack"
"""How a Slack user is proven: the request's signature (Slack vouches for `user.id`) and the directory's mapping."""

router = APIRouter()


class _Clock(Clock):
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now().timestamp()


class SlackDesk:
    """Handles verified Slack interactions: opens modals, decides submissions, answers ephemerally."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        decisions: DecisionDesk,
        signing_secret: str,
        client: AsyncWebClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        approval: ApprovalRepository | None = None,
        api: ApiRepository | None = None,
    ) -> None:
        self.pool, self.decisions, self.client, self.clock = pool, decisions, client, clock
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self.approval = approval or ApprovalRepository()
        self.api = api or ApiRepository()
        self._tasks: set[asyncio.Task[None]] = set()
        # One decision at a time per modal: a repeat waits for the first and gets its stored answer, instead of
        # racing it to the approval service (where it would be a `duplicate`).
        self._deciding: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------------------------------------ lifecycle

    def spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Finish `work` after the HTTP answer; failures are logged (Slack has its answer already)."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                log.warning("slack_interaction_abandoned", what=what)
                raise
            except Exception:
                log.exception("slack_interaction_failed", what=what)

        task = asyncio.create_task(guarded(), name=f"slack-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Let the interactions in progress finish (up to `timeout` s), then cancel (and log) the rest."""
        pending = set(self._tasks)
        if not pending:
            return
        _, unfinished = await asyncio.wait(pending, timeout=timeout)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            log.warning("slack_interactions_unfinished", count=len(unfinished))

    # ------------------------------------------------------------------------------------------------ entry

    async def receive(self, body: bytes, timestamp: str | None, signature: str | None) -> Response:
        """One request of Slack's: verify, dedupe, then answer (at once) and finish in the background."""
        if not timestamp or not signature or not self._signed(body, timestamp, signature):
            log.info("slack_signature_refused", has_signature=bool(signature))
            metrics.AUTHENTICATION_FAILURES.labels("invalid_signature").inc()
            raise ApiProblem(401, "invalid_signature", "the request does not carry Slack's valid, recent signature")
        digest = hashlib.sha256(b"v0:" + timestamp.encode() + b":" + body).digest()
        async with self.pool.acquire() as conn:
            fresh = await self.api.remember_slack_interaction(conn, digest, self.clock(), 2 * SIGNATURE_WINDOW)
        if not fresh:
            log.info("slack_interaction_replayed")
            return Response(status_code=200)
        payload = _payload(body)
        kind = payload.get("type")
        try:
            if kind == "block_actions":
                click = views.read_click(payload)
                self.spawn(self._on_click(click), "click")
                return Response(status_code=200)
            if kind == "view_submission":
                return await self._on_submission(views.read_submission(payload))
        except views.BadInteraction as exc:
            raise ApiProblem(
                422, "invalid_interaction", str(exc), errors=[{"field": "payload", "message": str(exc)}]
            ) from None
        # Other interactions (a modal closed, ...) need nothing from signoff.
        return Response(status_code=200)

    def _signed(self, body: bytes, timestamp: str, signature: str) -> bool:
        """Whether Slack signed `body` at `timestamp` (within the window). Anything a caller can send in the headers
        is an answer, never an error: slack_sdk's verifier raises on a timestamp that is not an integer (`int()`),
        a signature that is not ASCII (`hmac.compare_digest`) and a body that is not UTF-8, so those are refused
        here, before it, as a signature that does not verify."""
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= TIMESTAMP_DIGITS):
            return False
        if not signature.isascii():
            return False
        try:
            body.decode()
        except UnicodeDecodeError:
            return False
        return self.verifier.is_valid(body, timestamp, signature)

    # ------------------------------------------------------------------------------------------------ press

    async def _user(self, slack_user: str, gate_id: str, what: str) -> str | None:
        """The directory user of `slack_user`; None (audited on the gate) when the directory does not map them."""
        async with self.pool.acquire() as conn:
            users = await self.approval.users_of_slack_id(conn, slack_user) if slack_user else []
            if len(users) == 1:
                return users[0]
            if await self.approval.gate_status(conn, gate_id) is not None:
                await self.api.record_denial(
                    conn,
                    gate_id=gate_id,
                    reason="unknown_user" if not users else "ambiguous_user",
                    actor=None,
                    credential=f"slack:{slack_user}",
                    detail={"detail": f"Slack user {slack_user} {what}", "slack_user": slack_user, "users": users},
                    at=self.clock(),
                )
        log.info("slack_user_unknown", slack_user=slack_user, gate_id=gate_id, matches=len(users))
        return None

    async def _on_click(self, click: views.Click) -> None:
        user = await self._user(click.slack_user, click.gate_id, f"pressed {click.action}")
        if user is None:
            await self._ephemeral(click.response_url, views.unknown_user_text(click.slack_user))
            return
        async with self.pool.acquire() as conn:
            row = await self.approval.find_gate(conn, click.gate_id)
            votes = await self.approval.votes_of(conn, [click.gate_id]) if row is not None else []
        if row is None:
            await self._ephemeral(click.response_url, f"Refused (unknown_gate): no gate {click.gate_id}")
            return
        stored = gates.load(row, votes)
        turn = gates.your_turn(stored, user)
        if not turn.may_decide:
            code = turn.reason.value if turn.reason is not None else "refused"
            if code == "gate_closed":
                words = self._closed(row, stored)
                await self._ephemeral(click.response_url, f"Refused (gate_closed): {words}")
            else:
                await self._ephemeral(click.response_url, views.refusal_text(code, code))
            log.info("slack_press_refused", gate_id=click.gate_id, user=user, reason=code)
            return
        request = stored.request
        modal = views.decision_modal(
            click,
            pipeline=request.pipeline_name,
            stage=request.stage_name,
            step=request.step_name,
            message=request.message or request.message_template,
            inputs=request.approver_inputs,
        )
        try:
            await self.client.views_open(trigger_id=click.trigger_id, view=modal)
        except (SlackApiError, SlackClientError) as exc:
            log.warning("slack_modal_not_opened", gate_id=click.gate_id, error=_slack_error(exc))
            await self._ephemeral(click.response_url, "signoff could not open the decision form; try again")
            return
        log.info("slack_modal_opened", gate_id=click.gate_id, user=user, action=click.action)

    def _closed(self, row: asyncpg.Record, stored: StoredGate) -> str:
        status = row["status"]
        current = stored.gate.current_votes()
        wanted = KernelStatus.APPROVE if status == "approved" else KernelStatus.REJECT
        deciders = [vote.approver.user_id for vote in current if vote.status is wanted]
        return views.closed_words(status, row["closed_at"], deciders, self.clock())

    # ------------------------------------------------------------------------------------------------ submission

    async def _on_submission(self, submission: views.Submission) -> Response:
        async with self.pool.acquire() as conn:
            row = await self.approval.find_gate(conn, submission.gate_id)
        if row is not None:
            errors = views.submission_errors(submission, gates.load(row, []).request.approver_inputs)
            if errors:
                return JSONResponse({"response_action": "errors", "errors": errors})
        self.spawn(self._decide(submission), "submission")
        return Response(status_code=200)  # an empty 200 closes the modal

    async def _decide(self, submission: views.Submission) -> None:
        user = await self._user(submission.slack_user, submission.gate_id, f"submitted {submission.action}")
        if user is None:
            await self._ephemeral(submission.response_url, views.unknown_user_text(submission.slack_user))
            return
        principal = Principal(user=user, credential=CREDENTIAL, credential_id=submission.slack_user)
        request = models.DecisionRequest(
            status=views.STATUS[submission.action],
            comment=submission.comment,
            inputs={name: value for name, value in submission.inputs.items() if value},
        )
        lock = self._deciding.setdefault(submission.view_id, asyncio.Lock())
        try:
            async with lock:
                status, answer = await self.decisions.decide(
                    principal, submission.gate_id, request, f"slack:{submission.view_id}", source=SOURCE
                )
        except ApiProblem as problem:
            log.info("slack_decision_refused", gate_id=submission.gate_id, user=user, reason=problem.code)
            if problem.code != "duplicate":  # the same decision again: the first one's answer stands
                await self._ephemeral(submission.response_url, views.refusal_text(problem.code, problem.detail))
            return
        finally:
            if not lock.locked() and self._deciding.get(submission.view_id) is lock:
                del self._deciding[submission.view_id]
        log.info("slack_decision_done", gate_id=submission.gate_id, user=user, outcome=answer.outcome, status=status)
        if status == 202:
            await self._ephemeral(submission.response_url, f"Your vote was sent; no answer yet ({answer.message})")

    async def _ephemeral(self, response_url: str | None, text: str) -> None:
        """Tell only the person who pressed (the interaction's `response_url`)."""
        if not response_url:
            return
        try:
            await AsyncWebhookClient(response_url, timeout=5).send_dict(views.ephemeral(text))
        except (SlackClientError, OSError) as exc:
            log.warning("slack_ephemeral_not_sent", error=type(exc).__name__)


def _slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError) and exc.response is not None:
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__


def _payload(body: bytes) -> dict[str, Any]:
    """The form's `payload` field (JSON), or 400 naming it."""
    try:
        fields = parse_qs(body.decode(), strict_parsing=True, max_num_fields=10)
        payload = json.loads(fields["payload"][0])
    except (ValueError, RecursionError, KeyError, IndexError):  # UnicodeDecodeError is a ValueError
        raise ApiProblem(
            400,
            "malformed_body",
            "payload: a form field `payload` with Slack's JSON is required",
            errors=[{"field": "payload", "message": "missing or not JSON"}],
        ) from None
    if not isinstance(payload, dict):
        raise ApiProblem(400, "malformed_body", "payload: not a JSON object", errors=[{"field": "payload"}])
    return payload


@router.post("/slack/interactions", include_in_schema=False)
async def slack_interactions(request: Request) -> Response:
    """Slack's interactivity request URL (the app manifest's `interactivity.request_url`)."""
    desk: SlackDesk | None = getattr(request.app.state.context, "slack", None)
    if desk is None:
        problem = ApiProblem(503, "slack_disabled", "Slack interactivity is not configured (SIGNOFF_SLACK_*)")
        return JSONResponse(problem.document(request.url.path), status_code=503, media_type=PROBLEM_TYPE)
    body = await request.body()
    return await desk.receive(
        body, request.headers.get("x-slack-request-timestamp"), request.headers.get("x-slack-signature")
    )
