"""Deciding through the api: the authenticated user's vote becomes a signed `ApprovalDecision` (source `api`) on
the decisions topic, like a decision from any other source, and the request answers with the approval service's
verdict once it is known (or 202 with the decision id after a bounded wait).

The api never judges a vote itself (eligibility, self-approval, inputs, tokens are the approval service's rules);
it only proves who is voting and turns the verdict into HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.api import gates, metrics, models
from signoff.api.identity import Principal
from signoff.api.outcomes import OutcomeWaiters
from signoff.api.problems import ApiProblem, nul_problem, refusal_problem, refuse_nul
from signoff.api.repository import ApiRepository, StoredAnswer
from signoff.approval.repository import ApprovalRepository
from signoff.contracts.events import DecisionStatus
from signoff.contracts.topics import APPROVAL_DECISIONS
from signoff.kernel import user_key
from signoff.runtime import tracing

log = structlog.get_logger(__name__)

SOURCE = "api"
EVENT_SOURCE = "urn:signoff:api"
ACT_ON_BEHALF = "act_on_behalf"
# Decision ids of idempotent requests: the same user and key always name the same decision, so even two
# concurrent repeats are one vote (the approval service counts a decision id once).
_IDEMPOTENT_DECISIONS = uuid.UUID("5b0f7a52-3c8e-4a55-9e0f-6d1f1c9a2b71")


@dataclass(frozen=True)
class Verdict:
    """The approval service's answer, read back from its audit trail."""

    kind: str  # "vote" | "refused"
    gate_id: str | None
    reason: str | None
    detail: str


def _count(decision: wire.ApprovalDecision, verdict: Verdict | None) -> None:
    """Count a decision sent, by the verdict it got (the approval role counts the votes themselves)."""
    answered = "pending" if verdict is None else "refused" if verdict.kind == "refused" else "counted"
    metrics.DECISIONS.labels(decision.source, decision.status.value.lower(), answered).inc()
    if verdict is not None and verdict.kind == "refused":
        metrics.DECISIONS_REFUSED.labels(verdict.reason or "refused").inc()


class DecisionDesk:
    """Publishes decisions and waits for their verdicts."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        waiters: OutcomeWaiters,
        key: bytes | None,
        wait_seconds: float,
        base_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        decisions_topic: str = APPROVAL_DECISIONS.name,
        approval: ApprovalRepository | None = None,
        api: ApiRepository | None = None,
        source_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        """`key`: the key of source `api`; `source_keys`: those of the other sources the api decides for (`slack`:
        decisions made in Slack, docs/notifications.md)."""
        self.pool, self.producer, self.waiters = pool, producer, waiters
        self.source_keys = {**(source_keys or {}), SOURCE: key} if key is not None else dict(source_keys or {})
        self.key, self.wait_seconds, self.base_url, self.clock = key, wait_seconds, base_url, clock
        self.decisions_topic = decisions_topic
        self.approval = approval or ApprovalRepository()
        self.api = api or ApiRepository()
        # One request at a time per (user, Idempotency-Key) in this replica: a client retrying before its first
        # answer must get that answer, not send the decision again (each repeat would be audited as a duplicate).
        self._keyed: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    async def decide(
        self,
        principal: Principal,
        gate_id: str,
        request: models.DecisionRequest,
        idempotency_key: str | None,
        *,
        source: str = SOURCE,
    ) -> tuple[int, models.DecisionAnswer]:
        """(HTTP status, answer) for a vote by `principal` (or by the user it acts for), published as a decision of
        `source` (`api`, or `slack` for a vote made in Slack); ApiProblem when refused."""
        # Before anything reads the database or publishes: PostgreSQL's text cannot hold a NUL.
        if "\x00" in gate_id:
            raise nul_problem("gate_id", "invalid_decision")
        refuse_nul(request, "invalid_decision")
        approver, submitted_by = self._approver(principal, request)
        digest = hashlib.sha256(
            json.dumps([gate_id, request.model_dump(mode="json")], sort_keys=True).encode()
        ).digest()
        if idempotency_key is None:
            return await self._decide_once(principal, gate_id, request, approver, submitted_by, None, digest, source)
        lock = self._keyed.get((principal.user, idempotency_key))
        if lock is None:
            lock = self._keyed[(principal.user, idempotency_key)] = asyncio.Lock()
        async with lock:
            stored = await self._stored(principal, idempotency_key, digest)
            if stored is not None:
                return stored
            return await self._decide_once(
                principal, gate_id, request, approver, submitted_by, idempotency_key, digest, source
            )

    async def _decide_once(
        self,
        principal: Principal,
        gate_id: str,
        request: models.DecisionRequest,
        approver: str,
        submitted_by: str | None,
        idempotency_key: str | None,
        digest: bytes,
        source: str,
    ) -> tuple[int, models.DecisionAnswer]:
        """Decide, and store the answer under the Idempotency-Key (when there is one)."""
        if idempotency_key is not None:
            decision_id = str(uuid.uuid5(_IDEMPOTENT_DECISIONS, f"{principal.user}\n{idempotency_key}"))
        else:
            decision_id = str(uuid.uuid4())
        try:
            status, answer = await self._decide(
                decision_id,
                approver,
                submitted_by,
                gate_id,
                request,
                repeatable=idempotency_key is not None,
                source=source,
            )
        except ApiProblem as problem:
            if idempotency_key is not None and problem.status < 500:
                await self._store(principal, idempotency_key, digest, problem.status, problem.document())
            raise
        if idempotency_key is not None and status == 200:
            await self._store(principal, idempotency_key, digest, status, answer.model_dump(mode="json"))
        return status, answer

    def _approver(self, principal: Principal, request: models.DecisionRequest) -> tuple[str, str | None]:
        if request.on_behalf_of is None or request.on_behalf_of == principal.user:
            return principal.user, None
        if not principal.may(ACT_ON_BEHALF):
            raise ApiProblem(
                403,
                "not_permitted",
                f"{principal.user} may not decide on behalf of others (the credential lacks `{ACT_ON_BEHALF}`)",
            )
        return request.on_behalf_of, principal.user

    async def _stored(self, principal: Principal, key: str, digest: bytes) -> tuple[int, models.DecisionAnswer] | None:
        async with self.pool.acquire() as conn:
            stored = await self.api.stored_answer(conn, principal.user, key)
        if stored is None:
            return None
        if stored.request_digest != digest:
            raise ApiProblem(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
        if stored.status_code != 200:
            body = stored.body
            raise ApiProblem(stored.status_code, body["code"], body["detail"], decision_id=body.get("decision_id"))
        return 200, models.DecisionAnswer.model_validate(stored.body)

    async def _store(self, principal: Principal, key: str, digest: bytes, status: int, body: dict) -> None:
        async with self.pool.acquire() as conn:
            await self.api.store_answer(conn, principal.user, key, StoredAnswer(digest, status, body), self.clock())

    async def _decide(
        self,
        decision_id: str,
        approver: str,
        submitted_by: str | None,
        gate_id: str,
        request: models.DecisionRequest,
        *,
        repeatable: bool,
        source: str = SOURCE,
    ) -> tuple[int, models.DecisionAnswer]:
        """`repeatable`: the decision id comes from an Idempotency-Key, so an earlier request may have sent it."""
        key = self.source_keys.get(source)
        if key is None:
            setting = "SIGNOFF_API_DECISION_KEY" if source == SOURCE else f"SIGNOFF_{source.upper()}_DECISION_KEY"
            raise ApiProblem(503, "decisions_disabled", f"the api has no decision key ({setting})")
        async with self.pool.acquire() as conn:
            row = await self.approval.find_gate(conn, gate_id)
            earlier = await self._verdict(conn, decision_id) if repeatable else None
        if row is None:
            raise ApiProblem(404, "unknown_gate", f"no gate {gate_id}")
        if earlier is None:
            decision = self._decision(decision_id, approver, submitted_by, row, request, source, key)
            # The decision continues the run's trace (stored with its gate), linked to the caller's request.
            with tracing.span(
                "api decide",
                parent=row["traceparent"],
                links=(tracing.current_traceparent(),),
                attributes={"signoff.gate_id": gate_id, "signoff.decision_id": decision_id},
            ):
                verdict = await self._publish_and_wait(decision, tracing.current_traceparent(row["traceparent"]))
            _count(decision, verdict)
        else:
            verdict = earlier  # an idempotent repeat whose first answer was not stored: the first verdict stands
        if verdict is None:
            return 202, models.DecisionAnswer(
                decision_id=decision_id,
                gate_id=gate_id,
                outcome="pending",
                approver=approver,
                status=request.status,
                message=f"decision {decision_id} sent; no answer within {self.wait_seconds:g}s "
                f"(GET /api/v1/gates/{gate_id}/audit tells)",
            )
        if verdict.kind == "refused":
            raise refusal_problem(verdict.reason or "refused", verdict.detail or "refused", decision_id=decision_id)
        return 200, await self._counted(decision_id, approver, request.status, gate_id)

    def _decision(
        self,
        decision_id: str,
        approver: str,
        submitted_by: str | None,
        row: asyncpg.Record,
        request: models.DecisionRequest,
        source: str,
        key: bytes,
    ) -> wire.ApprovalDecision:
        try:
            decision = wire.ApprovalDecision(
                decision_id=decision_id,
                source=source,
                gate_id=row["id"],
                token=request.token or row["token"],
                status=request.status,
                approver=approver,
                submitted_by=submitted_by,
                comment=request.comment,
                inputs=request.inputs,
                decided_at=self.clock(),
            )
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in error["loc"]), "message": error["msg"]} for error in exc.errors()
            ]
            first = errors[0]
            raise ApiProblem(422, "invalid_decision", f"{first['field']}: {first['message']}", errors=errors) from None
        refuse_nul(decision, "invalid_decision")
        return decision.signed(key)

    async def _publish_and_wait(self, decision: wire.ApprovalDecision, traceparent: str | None) -> Verdict | None:
        ring = self.waiters.register(decision.decision_id)
        event = wire.new_event(decision, source=EVENT_SOURCE, traceparent=traceparent)
        value, headers = wire.encode(event)
        try:
            await self.producer.send_and_wait(self.decisions_topic, value, key=wire.message_key(event), headers=headers)
        except Exception as exc:  # any broker failure: the vote was not sent, the client may retry
            self.waiters.unregister(decision.decision_id, ring)
            log.warning("decision_publish_failed", decision_id=decision.decision_id, error=str(exc))
            raise ApiProblem(503, "broker_unavailable", "the decision could not be sent; try again") from None
        log.info(
            "decision_sent", decision_id=decision.decision_id, gate_id=decision.gate_id, approver=decision.approver
        )

        async def verdict() -> Verdict | None:
            async with self.pool.acquire() as conn:
                return await self._verdict(conn, decision.decision_id)

        found = await self.waiters.wait(decision.decision_id, ring, verdict, self.wait_seconds)
        assert found is None or isinstance(found, Verdict)
        return found

    async def _verdict(self, conn: asyncpg.Connection, decision_id: str) -> Verdict | None:
        for row in await self.approval.audit_of_decision(conn, decision_id):
            if row["kind"] in ("vote", "refused"):
                return Verdict(row["kind"], row["gate_id"], row["reason"], (row["detail"] or {}).get("detail", ""))
        return None

    async def _counted(
        self, decision_id: str, approver: str, status: DecisionStatus, gate_id: str
    ) -> models.DecisionAnswer:
        async with self.pool.acquire() as conn:
            row = await self.approval.find_gate(conn, gate_id)
            votes = await self.approval.votes_of(conn, [gate_id])
        assert row is not None
        stored = gates.load(row, votes)
        progress = gates.policy_progress(stored).text
        earlier = [
            v for v in votes if user_key(v["approver"]) == user_key(approver) and v["decision_id"] != decision_id
        ]
        verb = "approved" if status is DecisionStatus.APPROVED else "rejected"
        message = f"vote counted: {approver} {verb} gate {gate_id}"
        if earlier:
            message += f" (replacing their earlier vote: {gates.wire_status(earlier[-1]['status']).value})"
        message += f"; {progress}; gate is now {row['status']}"
        return models.DecisionAnswer(
            decision_id=decision_id,
            gate_id=gate_id,
            outcome="counted",
            approver=approver,
            status=status,
            replaced_earlier_vote=bool(earlier),
            gate_status=row["status"],
            progress=progress,
            message=message,
        )

    async def decide_many(self, principal: Principal, items: list[models.BulkItem]) -> models.BulkAnswer:
        """Each item decided as one request (concurrently); a result per item, in order. An item holding a NUL
        character refuses the whole request (422 naming `decisions[i].<field>`) before any item is sent."""
        refuse_nul(models.BulkRequest.model_construct(decisions=items), "invalid_decision")

        async def one(item: models.BulkItem) -> models.BulkResult:
            request = models.DecisionRequest(**item.model_dump(exclude={"gate_id"}))
            try:
                status, answer = await self.decide(principal, item.gate_id, request, None)
            except ApiProblem as problem:
                return models.BulkResult(
                    gate_id=item.gate_id,
                    http_status=problem.status,
                    problem=models.Problem.model_validate(problem.document()),
                )
            return models.BulkResult(gate_id=item.gate_id, http_status=status, answer=answer)

        return models.BulkAnswer(results=list(await asyncio.gather(*(one(item) for item in items))))
