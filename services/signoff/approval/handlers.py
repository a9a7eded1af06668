"""The approval service's consumer handler: requests open gates, cancels cancel them, decisions vote on them.

Each handler loads the gates it needs from the unit of work, calls the domain, and the unit of work commits: it
turns the events the gates collected into votes, audit rows and outbox rows inside the consumer loop's transaction
(`uow.conn`, `uow.outbox`), and the metrics it tallied are counted once that committed (`uow.after_commit`). Time
comes from the injected clock.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import structlog

from signoff import contracts as wire
from signoff.approval.cdevents import ApprovalLinks
from signoff.approval.domain.gate import Gate, TokenFactory, new_token
from signoff.approval.domain.model import Directory, Member
from signoff.approval.domain.requests import refusal_reasons
from signoff.approval.domain.timeouts import effective_timeout
from signoff.approval.mapping import (
    StoredGate,
    domain_inputs,
    domain_key,
    domain_policy,
    domain_status,
    member_from_row,
    requested_rules,
)
from signoff.approval.metrics import GateMetrics
from signoff.approval.repository import ApprovalRepository, AuditRow
from signoff.approval.settings import ApprovalSettings
from signoff.approval.unit_of_work import ApprovalUnitOfWork, Cause
from signoff.contracts.base import format_utc
from signoff.contracts.durations import format_duration
from signoff.contracts.events import RefusalReason as WireRefusal
from signoff.kernel import TimeoutAction
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.consumer import Received, UnitOfWork
from signoff.runtime.cooperative import cooperate

log = structlog.get_logger(__name__)


class UnsupportedEvent(ValueError):
    """An event type the approval service does not consume (dead-lettered by the loop)."""


class ApprovalHandler:
    """`BatchHandler` of the approval service."""

    def __init__(
        self,
        settings: ApprovalSettings,
        *,
        clock: Clock | None = None,
        repository: ApprovalRepository | None = None,
        token_factory: TokenFactory = new_token,
        directory: Sequence[tuple[str, str, str | None, dict[str, str]]] | None = None,
        metrics: GateMetrics | None = None,
    ) -> None:
        """`directory`: members (group, user id, e-mail, chat handles) to load into the directory table before the
        first batch is applied (the service also loads them at start-up; loading is idempotent). `metrics`: the
        process's (its bounded pipeline labels), shared with the expiry loop."""
        self.settings = settings
        self._keys = {source: key.get_secret_value().encode() for source, key in settings.decision_key_map().items()}
        self._directory = list(directory) if directory is not None else None
        self.clock = clock or SystemClock()
        self.repository = repository or ApprovalRepository()
        self.token_factory = token_factory
        self.metrics = metrics or GateMetrics(settings.metrics_pipeline_ids, settings.metrics_pipeline_limit)
        self.links = ApprovalLinks(settings.approval_page_url)

    async def apply(self, uow: UnitOfWork, batch: Sequence[Received]) -> None:
        if self._directory is not None:
            await self.repository.load_directory_file(uow.conn, self._directory)
            self._directory = None
        work = ApprovalUnitOfWork(uow, self.repository, links=self.links, metrics=self.metrics)
        requests = [r for r in batch if isinstance(r.event.data, wire.ApprovalRequested)]
        if requests:
            await self._open(work, requests)
        decisions = [d for r in batch if isinstance(d := r.event.data, wire.ApprovalDecision)]
        if len(decisions) > 1:
            # What the batch's decisions will ask for, read in three statements instead of three per decision.
            await work.lock_ahead([d.gate_id for d in decisions if d.gate_id])
            await work.read_decisions([d.decision_id for d in decisions])
        for received in batch:
            data = received.event.data
            if isinstance(data, wire.ApprovalRequested):
                continue
            if isinstance(data, wire.ApprovalCancelRequested):
                await self._cancel(work, received, data)
            elif isinstance(data, wire.ApprovalDecision):
                await self._decide(work, received, data)
            else:
                raise UnsupportedEvent(f"the approval service does not consume {received.event.type}")
        await work.commit()

    async def gave_up(self, uow: UnitOfWork, received: Received, error: str) -> None:
        """A request this service keeps failing on is dead-lettered; its pipeline hears it as a RequestRefused, or
        it would wait for a gate that never opens (GivingUp). Decisions and cancels need nothing: the api's wait
        for a verdict ends on its own (202), and a cancel's execution has ended already."""
        if not isinstance(received.event.data, wire.ApprovalRequested):
            return
        work = ApprovalUnitOfWork(uow, self.repository, links=self.links, metrics=self.metrics)
        # The exception's type, not its text: that may hold SQL or values the requester should not be shown.
        reason = f"the approval service could not process it ({error.split(':', 1)[0]}); it is on the dead-letter topic"
        self._refuse_request(work, received, {"request": reason}, self.clock.now())
        await work.commit()

    # ------------------------------------------------------------------------------------------------ requests

    async def _open(self, work: ApprovalUnitOfWork, requests: Sequence[Received]) -> None:
        """Open a gate per new natural key, set-based; a key already present is the same gate (nothing published)."""
        now = self.clock.now()
        unique: dict[str, Received] = {}
        for received in requests:
            unique.setdefault(received.event.data.key.as_path(), received)
        rules = [rule for received in unique.values() for rule in received.event.data.policy.all_rules()]
        groups = {group for rule in rules for group in rule.user_groups}
        members: dict[str, list[Member]] = defaultdict(list)
        for row in await self.repository.members_of(work.tx.conn, groups):
            members[row["group_name"]].append(member_from_row(row))
        users = {user for rule in rules for user in rule.users}
        known_users = await self.repository.known_users(work.tx.conn, users)

        # The gates of a burst mostly name the same groups: one directory snapshot per set of groups, shared (it is
        # immutable), which the unit of work also serialises once.
        snapshots: dict[tuple[str, ...], Directory] = {}
        new: list[tuple[StoredGate, Cause]] = []
        for index, received in enumerate(unique.values()):
            await cooperate(index)  # rules, rows and JSON for up to 1,000 requests: CPU only, let a decision in
            request: wire.ApprovalRequested = received.event.data
            inputs = domain_inputs(request.approver_inputs)
            timeout_action = TimeoutAction(request.timeout_action.value)
            reasons = refusal_reasons(
                requested_rules(request.policy),
                directory=members,
                known_users=known_users,
                disallow_pipeline_executor=request.policy.disallow_pipeline_executor,
                pipeline_executor=request.triggered_by.user,
                inputs=inputs,
                timeout_action=timeout_action,
                requested_timeout=request.timeout_span,
                maximum_timeout=self.settings.max_timeout_span,
            )
            if reasons:
                self._refuse_request(work, received, reasons, now)
                continue
            policy = domain_policy(request.policy)
            timeout = effective_timeout(
                request.timeout_span, self.settings.default_timeout_span, self.settings.max_timeout_span
            )
            groups_of_policy = tuple(dict.fromkeys(group for rule in policy.rules for group in rule.user_groups))
            if groups_of_policy not in snapshots:
                snapshots[groups_of_policy] = Directory({group: members.get(group, []) for group in groups_of_policy})
            gate, _ = Gate.open(
                domain_key(request.key),
                policy,
                inputs,
                snapshots[groups_of_policy],
                request.triggered_by.user,
                now,
                timeout,
                timeout_action,
                self.token_factory,
            )
            stored = StoredGate(str(uuid.uuid4()), gate, request, traceparent=received.event.traceparent)
            new.append((stored, Cause(received.event.traceparent)))
        opened = await work.add(new)
        if len(opened) < len(new):
            log.info("approval_requests_for_existing_gates", count=len(new) - len(opened))

    def _refuse_request(
        self, work: ApprovalUnitOfWork, received: Received, reasons: dict[str, str], now: datetime
    ) -> None:
        """Publish a request the service cannot serve as RequestRefused, and audit it."""
        request: wire.ApprovalRequested = received.event.data
        log.info("approval_request_refused", key=request.key.as_path(), reasons=reasons)
        refusal = wire.RequestRefused(
            key=request.key,
            reasons=reasons,
            triggered_by=request.triggered_by,
            pipeline_name=request.pipeline_name,
            step_name=request.step_name,
            refused_at=now,
        )
        work.publish(refusal, at=now, traceparent=received.event.traceparent)
        work.audit(
            AuditRow(
                gate_id=None,
                kind="request_refused",
                at=now,
                actor=request.triggered_by.user,
                reason="unservable",
                detail={"key": request.key.as_path(), "reasons": reasons},
            )
        )

    # ------------------------------------------------------------------------------------------------ cancels

    async def _cancel(self, work: ApprovalUnitOfWork, received: Received, data: wire.ApprovalCancelRequested) -> None:
        now = self.clock.now()
        cause = Cause(received.event.traceparent)
        stored = await work.gate(data.gate_id, cause) if data.gate_id else None
        if stored is None:
            stored = await work.gate_by_key(data.key, cause)
        if stored is None:
            log.info("cancel_for_unknown_gate", key=data.key.as_path())
            work.audit(
                AuditRow(gate_id=None, kind="cancel", at=now, reason="unknown_gate", detail={"key": data.key.as_path()})
            )
            return
        if not stored.gate.cancel(data.reason, now):
            work.audit(
                AuditRow(
                    gate_id=stored.id,
                    kind="cancel",
                    at=now,
                    reason="gate_closed",
                    detail={"status": stored.status.value},
                )
            )

    # ------------------------------------------------------------------------------------------------ decisions

    async def _decide(self, work: ApprovalUnitOfWork, received: Received, decision: wire.ApprovalDecision) -> None:
        now = self.clock.now()
        key = self._keys.get(decision.source)
        if key is None:
            return self._refuse(work, received, decision, WireRefusal.UNKNOWN_SOURCE, "no key for this source", now)
        if decision.signature is None:
            return self._refuse(work, received, decision, WireRefusal.UNSIGNED, "the decision is unsigned", now)
        # The signature covers the data object as the sender wrote it (ApprovalDecision.signing_input).
        if not decision.signature_valid(key, received.event.received):
            return self._refuse(work, received, decision, WireRefusal.BAD_SIGNATURE, "signature does not match", now)
        cause = Cause(received.event.traceparent, source=decision.source, submitted_by=decision.submitted_by)
        if decision.gate_id is not None:
            stored = await work.gate(decision.gate_id, cause)
        else:
            assert decision.pipeline_name and decision.stage_name and decision.action_name  # the model checks
            stored = await work.gate_by_action(
                decision.pipeline_name, decision.stage_name, decision.action_name, decision.token, cause
            )
        gate_id = stored.id if stored is not None else None
        # Every authentic decision id is remembered, whatever becomes of it, so a replay is never a vote.
        first, seen_on = await work.remember_decision(decision.decision_id, decision.source, gate_id, now)
        if not first:
            detail = f"decision {decision.decision_id} was already seen"
            return self._refuse(work, received, decision, WireRefusal.DUPLICATE, detail, now, gate_id=seen_on)
        max_age = self.settings.decision_max_age_span
        if abs(now - decision.decided_at) > max_age:
            detail = (
                f"decided_at {format_utc(decision.decided_at)} is more than {format_duration(max_age)}"
                f" from its arrival at {format_utc(now)}"
            )
            return self._refuse(work, received, decision, WireRefusal.STALE_DECISION, detail, now, gate_id=gate_id)
        if stored is None:
            detail = f"no gate {decision.default_subject()}"
            return self._refuse(work, received, decision, WireRefusal.UNKNOWN_GATE, detail, now)
        events = stored.gate.decide(
            decision_id=decision.decision_id,
            approver=Member(user_id=decision.approver),
            status=domain_status(decision.status),
            token=decision.token,
            comment=decision.comment,
            inputs=decision.inputs,
            at=now,
            source=decision.source,
            decided_at=decision.decided_at,
        )
        await work.supersede_older(stored, events, now, cause)
        return None

    def _refuse(
        self,
        work: ApprovalUnitOfWork,
        received: Received,
        decision: wire.ApprovalDecision,
        reason: WireRefusal,
        detail: str,
        now: datetime,
        *,
        gate_id: str | None = None,
    ) -> None:
        """Refuse a decision before the gate judged it: audited and published (keyed by the gate id when known,
        else by the decision id)."""
        log.info("decision_refused", decision_id=decision.decision_id, reason=reason.value, detail=detail)
        work.tally.refused(reason.value)
        work.audit(
            AuditRow(
                gate_id=gate_id,
                kind="refused",
                at=now,
                decision_id=decision.decision_id,
                actor=decision.approver,
                reason=reason.value,
                detail={
                    "detail": detail,
                    "gate": decision.default_subject(),
                    **({"submitted_by": decision.submitted_by} if decision.submitted_by else {}),
                },
            )
        )
        refused = wire.DecisionRefused(
            decision_id=decision.decision_id,
            source=decision.source,
            approver=decision.approver,
            gate_id=gate_id,
            reason=reason,
            detail=detail,
            refused_at=now,
        )
        work.publish(refused, at=now, traceparent=received.event.traceparent)
