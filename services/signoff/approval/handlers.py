"""The approval service's consumer handler: requests open gates, cancels cancel them, decisions vote on them.

Everything happens inside the consumer loop's transaction (`uow.conn`); every published event is an outbox row
(`uow.outbox`), written in that same transaction, and every metric is tallied there and counted once it committed
(`uow.after_commit`). Time comes from the injected clock.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from signoff import contracts as wire
from signoff.approval.cdevents import ApprovalLinks, to_cdevent
from signoff.approval.domain import events as domain_events
from signoff.approval.domain.gate import Gate, TokenFactory, new_token
from signoff.approval.domain.model import Member, TimeoutAction
from signoff.approval.domain.requests import refusal_reasons
from signoff.approval.domain.timeouts import effective_timeout
from signoff.approval.mapping import (
    EVENT_SOURCE,
    StoredGate,
    audit_kind,
    domain_inputs,
    domain_key,
    domain_policy,
    domain_status,
    gate_from_row,
    member_from_row,
    members_to_json,
    requested_rules,
    to_wire,
)
from signoff.approval.metrics import GateMetrics, Tally
from signoff.approval.repository import ApprovalRepository, AuditRow, NewGate, NewVote
from signoff.approval.settings import ApprovalSettings
from signoff.contracts.base import format_utc
from signoff.contracts.cdevents import ApprovalCDEvent, encode_cdevent
from signoff.contracts.durations import format_duration
from signoff.contracts.events import RefusalReason as WireRefusal
from signoff.contracts.topics import CDEVENTS
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.consumer import Received, UnitOfWork
from signoff.runtime.cooperative import cooperate
from signoff.runtime.outbox import OutboxRecord, OutboxWriter, event_record

log = structlog.get_logger(__name__)


class UnsupportedEvent(ValueError):
    """An event type the approval service does not consume (dead-lettered by the loop)."""


def outbox_record(data: wire.EventData, *, at: datetime, traceparent: str | None = None) -> OutboxRecord:
    """The outbox row publishing `data` from this service."""
    return event_record(data, source=EVENT_SOURCE, at=at, traceparent=traceparent)


def cdevent_record(cdevent: ApprovalCDEvent, *, traceparent: str | None = None) -> OutboxRecord:
    """The outbox row publishing `cdevent` on `signoff.cdevents.v1`, keyed by the gate id (its subject)."""
    value, headers = encode_cdevent(cdevent, traceparent=traceparent)
    return OutboxRecord(
        id=cdevent.context.id,
        topic=CDEVENTS.name,
        key=cdevent.subject.id.encode(),
        type=cdevent.type,
        value=value,
        headers=headers,
    )


async def load_gates(
    repository: ApprovalRepository, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> list[StoredGate]:
    """Stored gates from their (locked) rows, with their votes."""
    if not rows:
        return []
    votes: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for vote in await repository.votes_of(conn, [row["id"] for row in rows]):
        votes[vote["gate_id"]].append(vote)
    return [gate_from_row(row, votes[row["id"]]) for row in rows]


async def persist_events(
    repository: ApprovalRepository,
    conn: asyncpg.Connection,
    outbox: OutboxWriter,
    stored: StoredGate,
    events: Sequence[domain_events.GateEvent],
    *,
    links: ApprovalLinks,
    tally: Tally,
    traceparent: str | None = None,
    source: str | None = None,
    superseded_by: str | None = None,
    submitted_by: str | None = None,
) -> None:
    """Store what `events` (already applied to `stored.gate`) changed, audit them, publish them (as gate events
    and as CDEvents, whose URLs start with `links`) and tally them."""
    audit = await record_events(
        repository,
        conn,
        outbox,
        stored,
        events,
        tally=tally,
        links=links,
        traceparent=traceparent,
        source=source,
        superseded_by=superseded_by,
        submitted_by=submitted_by,
    )
    await repository.audit(conn, audit)
    gate = stored.gate
    if gate.status.is_final and gate.closed_at is not None and any(_closes(e) for e in events):
        await repository.close_gate(conn, stored.id, gate.status.value, gate.closed_at)


async def record_events(
    repository: ApprovalRepository,
    conn: asyncpg.Connection,
    outbox: OutboxWriter,
    stored: StoredGate,
    events: Sequence[domain_events.GateEvent],
    *,
    links: ApprovalLinks,
    tally: Tally,
    traceparent: str | None = None,
    source: str | None = None,
    superseded_by: str | None = None,
    submitted_by: str | None = None,
) -> list[AuditRow]:
    """Store the votes among `events`, publish and tally all of them, each gate event followed by the CDEvent
    mirroring it (same transaction: one exists exactly when the other does); returns their audit rows for the
    caller to write (a batch of opened gates writes the audit rows of all of them in one statement)."""
    tally.events(stored, events)
    audit: list[AuditRow] = []
    for event in events:
        if isinstance(event, domain_events.VoteRecorded):
            decided_source, decided_at = stored.vote_meta[event.decision_id]
            await repository.record_vote(
                conn,
                NewVote(
                    gate_id=stored.id,
                    decision_id=event.decision_id,
                    source=decided_source,
                    approver=event.approver.user_id,
                    status=event.status.value,
                    comment=event.comment,
                    inputs=event.inputs,
                    decided_at=decided_at,
                    at=event.at,
                ),
                replaces=event.replaced_decision_id,
            )
        data = to_wire(event, stored, superseded_by=superseded_by, source=source)
        decision_id = getattr(event, "decision_id", None)
        approver = getattr(event, "approver", None)
        audit.append(
            AuditRow(
                gate_id=stored.id,
                kind=audit_kind(event),
                at=event.at,
                decision_id=decision_id,
                actor=approver.user_id if isinstance(approver, Member) else None,
                reason=event.reason.value if isinstance(event, domain_events.DecisionRefused) else None,
                detail={
                    "event": data.event_type,
                    "detail": getattr(event, "detail", ""),
                    # A service principal that decided for the approver: the audit names both.
                    **({"submitted_by": submitted_by} if submitted_by and decision_id else {}),
                },
            )
        )
        outbox.add(outbox_record(data, at=event.at, traceparent=traceparent))
        cdevent = to_cdevent(event, stored, links)
        if cdevent is not None:
            outbox.add(cdevent_record(cdevent, traceparent=traceparent))
    return audit


def _closes(event: domain_events.GateEvent) -> bool:
    return isinstance(
        event,
        domain_events.GateApproved
        | domain_events.GateRejected
        | domain_events.GateExpired
        | domain_events.GateCancelled,
    )


@dataclass
class _Prefetched:
    """Gates of a batch's decisions read (and locked) up front, with their votes. Each is taken once: a second
    decision for the same gate in the batch reads it again, with what the first one wrote."""

    rows: dict[str, asyncpg.Record]
    votes: dict[str, list[asyncpg.Record]]

    def take(self, gate_id: str) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
        row = self.rows.pop(gate_id, None)
        return None if row is None else (row, self.votes.pop(gate_id, []))


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
        tally = self.metrics.tally()
        uow.after_commit.append(tally.commit)
        if self._directory is not None:
            await self.repository.load_directory_file(uow.conn, self._directory)
            self._directory = None
        requests = [r for r in batch if isinstance(r.event.data, wire.ApprovalRequested)]
        if requests:
            await self._open(uow, tally, requests)
        decided = await self._lock_decided_gates(uow.conn, batch)
        for received in batch:
            data = received.event.data
            if isinstance(data, wire.ApprovalRequested):
                continue
            if isinstance(data, wire.ApprovalCancelRequested):
                await self._cancel(uow, tally, received, data)
            elif isinstance(data, wire.ApprovalDecision):
                await self._decide(uow, tally, received, data, decided)
            else:
                raise UnsupportedEvent(f"the approval service does not consume {received.event.type}")

    # ------------------------------------------------------------------------------------------------ requests

    async def _open(self, uow: UnitOfWork, tally: Tally, requests: Sequence[Received]) -> None:
        """Open a gate per new natural key, set-based; a key already present is the same gate (nothing published)."""
        now = self.clock.now()
        unique: dict[str, Received] = {}
        for received in requests:
            unique.setdefault(received.event.data.key.as_path(), received)
        rules = [rule for received in unique.values() for rule in received.event.data.policy.all_rules()]
        groups = {group for rule in rules for group in rule.user_groups}
        members: dict[str, list[Member]] = defaultdict(list)
        for row in await self.repository.members_of(uow.conn, groups):
            members[row["group_name"]].append(member_from_row(row))
        users = {
            user
            for received in unique.values()
            for rule in received.event.data.policy.all_rules()
            for user in rule.users
        }
        known_users = await self.repository.known_users(uow.conn, users)

        candidates: dict[str, tuple[StoredGate, list[domain_events.GateEvent], Received]] = {}
        rows: list[NewGate] = []
        refused: list[tuple[Received, dict[str, str]]] = []
        for index, received in enumerate(unique.values()):
            await cooperate(index)  # rules, rows and JSON for up to 1,000 requests: CPU only, let a decision in
            request: wire.ApprovalRequested = received.event.data
            reasons = refusal_reasons(
                requested_rules(request.policy),
                directory=members,
                known_users=known_users,
                disallow_pipeline_executor=request.policy.disallow_pipeline_executor,
                pipeline_executor=request.triggered_by.user,
                inputs=domain_inputs(request.approver_inputs),
                timeout_action=TimeoutAction(request.timeout_action.value),
                requested_timeout=request.timeout_span,
                maximum_timeout=self.settings.max_timeout_span,
            )
            if reasons:
                refused.append((received, reasons))
                continue
            policy = domain_policy(request.policy)
            timeout = effective_timeout(
                request.timeout_span, self.settings.default_timeout_span, self.settings.max_timeout_span
            )
            gate, events = Gate.open(
                domain_key(request.key),
                policy,
                domain_inputs(request.approver_inputs),
                {group: members.get(group, []) for rule in policy.rules for group in rule.user_groups},
                request.triggered_by.user,
                now,
                timeout,
                TimeoutAction(request.timeout_action.value),
                self.token_factory,
            )
            gate_id = str(uuid.uuid4())
            candidates[gate_id] = (StoredGate(gate_id, gate, request), events, received)
            rows.append(
                NewGate(
                    id=gate_id,
                    pipeline_id=request.key.pipeline_id,
                    execution_id=request.key.execution_id,
                    stage_id=request.key.stage_id,
                    step_id=request.key.step_id,
                    attempt=request.key.attempt,
                    token=gate.token,
                    policy=request.policy.model_dump_json(),
                    inputs="[" + ",".join(item.model_dump_json() for item in request.approver_inputs) + "]",
                    pipeline_executor=gate.pipeline_executor,
                    members_by_group=json.dumps(members_to_json(gate.directory)),
                    opened_at=gate.opened_at,
                    expires_at=gate.expires_at,
                    timeout_action=gate.timeout_action.value,
                    request=request.model_dump_json(),
                    pipeline_name=request.pipeline_name,
                    stage_name=request.stage_name,
                    step_name=request.step_name,
                    environments=tuple(environment.ref for environment in request.current_stage.environments),
                    traceparent=received.event.traceparent,
                )
            )
        inserted = await self.repository.insert_gates(uow.conn, rows)
        await self.repository.insert_gate_approvers(
            uow.conn,
            [
                (gate_id, member.key, stored.gate.opened_at)
                for gate_id in inserted
                for stored in (candidates[gate_id][0],)
                for member in stored.gate.eligible_approvers()
            ],
        )
        duplicates = len(rows) - len(inserted)
        if duplicates:
            log.info("approval_requests_for_existing_gates", count=duplicates)
        audit: list[AuditRow] = []
        for index, gate_id in enumerate(inserted):
            await cooperate(index)  # building and encoding each GateOpened and its CDEvent
            stored, events, received = candidates[gate_id]
            audit += await record_events(
                self.repository,
                uow.conn,
                uow.outbox,
                stored,
                events,
                tally=tally,
                links=self.links,
                traceparent=received.event.traceparent,
            )
        for received, reasons in refused:
            audit.append(self._refuse_request(uow, received, reasons, now))
        await self.repository.audit(uow.conn, audit)
        for gate_id in inserted:
            stored, _, received = candidates[gate_id]
            if stored.request.auto_reject_previous_approvals:
                await self._supersede_older(uow, tally, stored, inserted, received, now)

    def _refuse_request(self, uow: UnitOfWork, received: Received, reasons: dict[str, str], now: datetime) -> AuditRow:
        """Publish a request the service cannot serve as RequestRefused; returns its audit row."""
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
        uow.outbox.add(outbox_record(refusal, at=now, traceparent=received.event.traceparent))
        return AuditRow(
            gate_id=None,
            kind="request_refused",
            at=now,
            actor=request.triggered_by.user,
            reason="unservable",
            detail={"key": request.key.as_path(), "reasons": reasons},
        )

    async def _supersede_older(
        self,
        uow: UnitOfWork,
        tally: Tally,
        newer: StoredGate,
        new_ids: Sequence[str],
        received: Received,
        now: datetime,
    ) -> None:
        key = newer.request.key
        rows = await self.repository.pending_of_step(
            uow.conn, key.pipeline_id, key.stage_id, key.step_id, excluding=new_ids, opened_before=now
        )
        for older in await load_gates(self.repository, uow.conn, rows):
            events = older.gate.supersede(newer.gate.key, now)
            await persist_events(
                self.repository,
                uow.conn,
                uow.outbox,
                older,
                events,
                tally=tally,
                links=self.links,
                traceparent=received.event.traceparent,
                superseded_by=newer.id,
            )

    # ------------------------------------------------------------------------------------------------ cancels

    async def _cancel(
        self, uow: UnitOfWork, tally: Tally, received: Received, data: wire.ApprovalCancelRequested
    ) -> None:
        now = self.clock.now()
        row = await self.repository.gate_by_id(uow.conn, data.gate_id) if data.gate_id else None
        if row is None:
            key = data.key
            row = await self.repository.gate_by_key(
                uow.conn, key.pipeline_id, key.execution_id, key.stage_id, key.step_id, key.attempt
            )
        if row is None:
            log.info("cancel_for_unknown_gate", key=data.key.as_path())
            await self.repository.audit(
                uow.conn,
                [
                    AuditRow(
                        gate_id=None, kind="cancel", at=now, reason="unknown_gate", detail={"key": data.key.as_path()}
                    )
                ],
            )
            return
        (stored,) = await load_gates(self.repository, uow.conn, [row])
        events = stored.gate.cancel(data.reason, now)
        if not events:
            await self.repository.audit(
                uow.conn,
                [
                    AuditRow(
                        gate_id=stored.id,
                        kind="cancel",
                        at=now,
                        reason="gate_closed",
                        detail={"status": stored.status.value},
                    )
                ],
            )
            return
        await persist_events(
            self.repository,
            uow.conn,
            uow.outbox,
            stored,
            events,
            links=self.links,
            tally=tally,
            traceparent=received.event.traceparent,
        )

    # ------------------------------------------------------------------------------------------------ decisions

    async def _lock_decided_gates(self, conn: asyncpg.Connection, batch: Sequence[Received]) -> _Prefetched:
        """The gates that the batch's decisions name by id, locked, with their votes: two statements for the
        batch instead of two per decision (a batch of 200 decisions makes 400 round trips fewer)."""
        if not all(isinstance(r.event.data, wire.ApprovalDecision) for r in batch):
            # A cancel earlier in the batch could close a gate after it was read: only the decisions lane's
            # batches (decisions alone) read ahead.
            return _Prefetched({}, {})
        gate_ids = {r.event.data.gate_id for r in batch if r.event.data.gate_id is not None}
        if len(gate_ids) < 2:
            return _Prefetched({}, {})
        rows = {row["id"]: row for row in await self.repository.gates_by_ids(conn, sorted(gate_ids))}
        votes: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for vote in await self.repository.votes_of(conn, list(rows)):
            votes[vote["gate_id"]].append(vote)
        return _Prefetched(rows, votes)

    async def _decide(
        self,
        uow: UnitOfWork,
        tally: Tally,
        received: Received,
        decision: wire.ApprovalDecision,
        prefetched: _Prefetched | None = None,
    ) -> None:
        now = self.clock.now()
        key = self._keys.get(decision.source)
        if key is None:
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.UNKNOWN_SOURCE, "no key for this source", now
            )
        if decision.signature is None:
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.UNSIGNED, "the decision is unsigned", now
            )
        # The signature covers the data object as the sender wrote it (ApprovalDecision.signing_input).
        if not decision.signature_valid(key, received.event.received):
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.BAD_SIGNATURE, "signature does not match", now
            )
        taken = prefetched.take(decision.gate_id) if prefetched is not None and decision.gate_id else None
        if taken is not None:
            row = taken[0]
        elif decision.gate_id is not None:
            row = await self.repository.gate_by_id(uow.conn, decision.gate_id)
        else:
            assert decision.pipeline_name and decision.stage_name and decision.action_name  # the model checks
            row = await self.repository.gate_by_action(
                uow.conn, decision.pipeline_name, decision.stage_name, decision.action_name, decision.token
            )
        gate_id = row["id"] if row is not None else None
        # Every authentic decision id is remembered, whatever becomes of it, so a replay is never a vote.
        first, seen_on = await self.repository.remember_decision(
            uow.conn, decision.decision_id, decision.source, gate_id, now
        )
        if not first:
            detail = f"decision {decision.decision_id} was already seen"
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.DUPLICATE, detail, now, gate_id=seen_on
            )
        max_age = self.settings.decision_max_age_span
        if abs(now - decision.decided_at) > max_age:
            detail = (
                f"decided_at {format_utc(decision.decided_at)} is more than {format_duration(max_age)}"
                f" from its arrival at {format_utc(now)}"
            )
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.STALE_DECISION, detail, now, gate_id=gate_id
            )
        if row is None:
            return await self._refuse(
                uow, tally, received, decision, WireRefusal.UNKNOWN_GATE, f"no gate {decision.default_subject()}", now
            )
        if taken is not None:
            stored = gate_from_row(row, taken[1])
        else:
            (stored,) = await load_gates(self.repository, uow.conn, [row])
        stored.vote_meta[decision.decision_id] = (decision.source, decision.decided_at)
        events = stored.gate.decide(
            decision_id=decision.decision_id,
            approver=Member(user_id=decision.approver),
            status=domain_status(decision.status),
            token=decision.token,
            comment=decision.comment,
            inputs=decision.inputs,
            at=now,
        )
        await persist_events(
            self.repository,
            uow.conn,
            uow.outbox,
            stored,
            events,
            tally=tally,
            links=self.links,
            traceparent=received.event.traceparent,
            source=decision.source,
            submitted_by=decision.submitted_by,
        )
        return None

    async def _refuse(
        self,
        uow: UnitOfWork,
        tally: Tally,
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
        tally.refused(reason.value)
        await self.repository.audit(
            uow.conn,
            [
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
            ],
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
        uow.outbox.add(outbox_record(refused, at=now, traceparent=received.event.traceparent))
