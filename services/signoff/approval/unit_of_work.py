"""The approval service's unit of work (cosmicpython's pattern, on our outbox): it loads and adds gate aggregates,
and on `commit` turns the domain events they collected into what a change is stored as: vote rows, audit rows,
the closed status, and outbox rows (each gate event followed by the CDEvent mirroring it), tallying the metrics
for after the database commit.

It lives inside one database transaction (the consumer loop's batch, or one pass of the expiry loop): its
`commit` writes to that transaction, which the caller commits (then the outbox and `after_commit` run). Nothing is
written for a unit that is not committed: the handler raised, the transaction rolls back.

Order is kept: every gate event, audit row and outbox row is written in the order the commands produced it, so a
refusal published after a vote on the same gate follows it on the gate's partition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from signoff import contracts as wire
from signoff.approval.cdevents import ApprovalLinks, to_cdevent
from signoff.approval.domain import events as domain_events
from signoff.approval.domain.model import Directory, Member
from signoff.approval.mapping import EVENT_SOURCE, StoredGate, audit_kind, members_to_json, to_wire
from signoff.approval.metrics import GateMetrics, Tally
from signoff.approval.repository import ApprovalRepository, AuditRow, NewGate, NewVote, SeenDecision
from signoff.contracts.cdevents import ApprovalCDEvent, encode_cdevent
from signoff.contracts.topics import CDEVENTS
from signoff.kernel import GateKey, GateStatus
from signoff.runtime.consumer import UnitOfWork
from signoff.runtime.cooperative import cooperate
from signoff.runtime.outbox import OutboxRecord, event_record

_CLOSING = (
    domain_events.GateApproved,
    domain_events.GateRejected,
    domain_events.GateExpired,
    domain_events.GateCancelled,
)


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


@dataclass(frozen=True)
class Cause:
    """What a gate's changes come from: the trace they continue and, for a decision, its source (named by a refusal)
    and the service principal that submitted it for the approver (named by the audit)."""

    traceparent: str | None = None
    source: str | None = None
    submitted_by: str | None = None


@dataclass(frozen=True)
class _Change:
    stored: StoredGate
    event: domain_events.GateEvent
    cause: Cause


class ApprovalUnitOfWork:
    """Gate aggregates loaded (locked) or added in one transaction, and the events they produce."""

    def __init__(
        self, tx: UnitOfWork, repository: ApprovalRepository, *, links: ApprovalLinks, metrics: GateMetrics
    ) -> None:
        """`tx`: the transaction (its connection, outbox and after-commit hooks); `links`: where the CDEvents'
        URLs point; `metrics`: the process's, whose tally is counted after the transaction committed."""
        self.tx = tx
        self.repository = repository
        self.links = links
        self.tally: Tally = metrics.tally()
        tx.after_commit.append(self.tally.commit)
        self._seen: dict[str, tuple[StoredGate, Cause]] = {}
        self._locked_ahead: dict[str, StoredGate] = {}  # read by `lock_ahead`, not yet asked for
        self._ids_by_key: dict[GateKey, str] = {}
        self._written: list[_Change | AuditRow | OutboxRecord] = []
        # Decision ids read from `decisions_seen` (-> the gate each was about) or remembered by this transaction.
        self._decisions: dict[str, str | None] = {}
        self._decisions_read: set[str] = set()
        self._remembered: list[SeenDecision] = []
        # id(directory) -> (that directory, its JSON): the directory is kept, so its id is not reused meanwhile.
        self._snapshots: dict[int, tuple[Directory, str]] = {}

    # ------------------------------------------------------------------------------------------------ aggregates

    async def lock_ahead(self, gate_ids: Sequence[str]) -> None:
        """Lock and read the gates `gate_ids` (those that exist) in two statements, for the commands that will ask
        for them: a batch of 200 decisions makes 400 round trips fewer than one gate at a time."""
        wanted = {gate_id for gate_id in gate_ids if gate_id not in self._seen and gate_id not in self._locked_ahead}
        if not wanted:
            return
        for stored in await self.repository.gates_by_ids(self.tx.conn, list(wanted)):
            self._locked_ahead[stored.id] = stored

    async def gate(self, gate_id: str, cause: Cause) -> StoredGate | None:
        """The gate `gate_id`, locked; its changes come from `cause`."""
        seen = self._seen.get(gate_id)
        known = seen[0] if seen is not None else self._locked_ahead.get(gate_id)
        if known is not None:  # locked by this transaction already: no need to read it again
            return self._track(known, cause)
        return self._track(await self.repository.gate_by_id(self.tx.conn, gate_id), cause)

    async def gate_by_key(self, key: wire.GateKey, cause: Cause) -> StoredGate | None:
        """The gate with the natural key `key`, locked."""
        found = await self.repository.gate_by_key(
            self.tx.conn, key.pipeline_id, key.execution_id, key.stage_id, key.step_id, key.attempt
        )
        return self._track(found, cause)

    async def gate_by_action(
        self, pipeline_id: str, stage_id: str, step_id: str, token: str, cause: Cause
    ) -> StoredGate | None:
        """The gate a CodePipeline-style decision names (see `ApprovalRepository.gate_by_action`), locked."""
        found = await self.repository.gate_by_action(self.tx.conn, pipeline_id, stage_id, step_id, token)
        return self._track(found, cause)

    async def supersede_older(
        self, approved: StoredGate, events: Sequence[domain_events.GateEvent], now: datetime, cause: Cause
    ) -> None:
        """Harness's isAutoRejectEnabled ("auto-reject previous deployments paused in this step on approval"):
        when `events` (what a command on `approved` just caused) approve it, the pending gates of its step opened
        before it are rejected, superseded."""
        if not any(isinstance(event, domain_events.GateApproved) for event in events):
            return
        if approved.has_request:
            wanted = approved.request.auto_reject_previous_approvals
        else:  # rebuilt for a decision without its request document: the one flag read from it
            wanted = await self.repository.auto_rejects_previous(self.tx.conn, approved.id)
        if not wanted:
            return
        key = approved.gate.key
        found = await self.repository.pending_of_step(
            self.tx.conn, key.pipeline, key.stage, key.step, [approved.id], approved.gate.opened_at
        )
        for stored in found:
            older = self._track(stored, cause)
            if older is not None and older.gate.status is GateStatus.PENDING:  # not closed by this batch already
                older.gate.supersede(key, now)

    async def due(self, now: datetime, limit: int) -> list[StoredGate]:
        """Up to `limit` pending gates past their deadline at `now`, locked (those another replica holds are
        skipped); their changes continue each gate's own trace until `caused_by` says otherwise."""
        found = await self.repository.claim_due(self.tx.conn, now, limit)
        return [gate for gate in (self._track(s, Cause(s.traceparent)) for s in found) if gate is not None]

    def caused_by(self, stored: StoredGate, cause: Cause) -> None:
        """The changes of `stored` from now on come from `cause` (those before keep theirs)."""
        self._track(stored, cause)

    async def add(self, gates: Sequence[tuple[StoredGate, Cause]]) -> list[StoredGate]:
        """Insert newly opened gates (set-based) with who may decide them; returns those inserted: a natural key
        already stored is the same gate, skipped (its aggregate and events are dropped)."""
        by_id = {stored.id: (stored, cause) for stored, cause in gates}
        rows = [self._new_row(stored) for stored, _ in gates]
        inserted = [by_id[gate_id] for gate_id in await self.repository.insert_gates(self.tx.conn, rows)]
        await self.repository.insert_gate_approvers(
            self.tx.conn,
            [
                (stored.id, member.key, stored.gate.opened_at)
                for stored, _ in inserted
                for member in stored.gate.eligible_approvers()
            ],
        )
        return [gate for gate in (self._track(stored, cause) for stored, cause in inserted) if gate is not None]

    def _new_row(self, stored: StoredGate) -> NewGate:
        request, gate = stored.request, stored.gate
        # Gates opened together share their directory snapshot when they name the same groups: serialised once.
        snapshot = self._snapshots.get(id(gate.directory))
        if snapshot is None or snapshot[0] is not gate.directory:
            snapshot = (gate.directory, json.dumps(members_to_json(gate.directory)))
            self._snapshots[id(gate.directory)] = snapshot
        return NewGate(
            id=stored.id,
            pipeline_id=request.key.pipeline_id,
            execution_id=request.key.execution_id,
            stage_id=request.key.stage_id,
            step_id=request.key.step_id,
            attempt=request.key.attempt,
            token=gate.token,
            policy=request.policy.model_dump_json(),
            inputs="[" + ",".join(item.model_dump_json() for item in request.approver_inputs) + "]",
            pipeline_executor=gate.pipeline_executor,
            members_by_group=snapshot[1],
            opened_at=gate.opened_at,
            expires_at=gate.expires_at,
            timeout_action=gate.timeout_action.value,
            request=request.model_dump_json(),
            pipeline_name=request.pipeline_name,
            stage_name=request.stage_name,
            step_name=request.step_name,
            environments=tuple(environment.ref for environment in request.current_stage.environments),
            traceparent=stored.traceparent,
            environment_type=stored.environment_type,
        )

    def _track(self, stored: StoredGate | None, cause: Cause) -> StoredGate | None:
        if stored is None:
            return None
        # Read ahead and locked since: that copy is the gate as stored (only this transaction could change it).
        stored = self._locked_ahead.pop(stored.id, stored)
        seen = self._seen.get(stored.id)
        if seen is not None:
            # Already changed in this transaction, not yet written: the aggregate in hand is the current one.
            stored = seen[0]
            self._collect(stored, seen[1])
        self._seen[stored.id] = (stored, cause)
        self._ids_by_key[stored.gate.key] = stored.id
        return stored

    # ------------------------------------------------------------------------------------------------ decision ids

    async def read_decisions(self, decision_ids: Sequence[str]) -> None:
        """Read which of `decision_ids` were seen before, in one statement, for `remember_decision` to answer from."""
        wanted = [d for d in dict.fromkeys(decision_ids) if d not in self._decisions_read]
        self._decisions.update(await self.repository.decisions_seen(self.tx.conn, wanted))
        self._decisions_read.update(wanted)

    async def remember_decision(
        self, decision_id: str, source: str, gate_id: str | None, at: datetime
    ) -> tuple[bool, str | None]:
        """Remember a decision id as seen (one read ahead is written on `commit`, with the others of the
        transaction). Returns (first time, gate id): False and the gate it was about when the id was seen before,
        in an earlier transaction or earlier in this one (a replay, whatever happened to it then)."""
        if decision_id in self._decisions:
            return False, self._decisions[decision_id]
        if decision_id not in self._decisions_read:
            # Not read ahead (a batch's only decision): remembered at once, one statement either way.
            first, seen_on = await self.repository.remember_decision(self.tx.conn, decision_id, source, gate_id, at)
            self._decisions[decision_id] = seen_on
            return first, seen_on
        self._decisions[decision_id] = gate_id
        self._remembered.append(SeenDecision(decision_id, source, gate_id, at))
        return True, gate_id

    # ------------------------------------------------------------------------------------------------ without a gate

    def audit(self, row: AuditRow) -> None:
        """Append an audit row about something no aggregate records (a refused request or decision, a cancel of
        nothing)."""
        self._collect_all()
        self._written.append(row)

    def publish(self, data: wire.EventData, *, at: datetime, traceparent: str | None) -> None:
        """Publish `data` on commit (a refusal no gate produced)."""
        self._collect_all()
        self._written.append(outbox_record(data, at=at, traceparent=traceparent))

    # ------------------------------------------------------------------------------------------------ commit

    def _collect(self, stored: StoredGate, cause: Cause) -> None:
        self._written.extend(_Change(stored, event, cause) for event in stored.gate.collect_events())

    def _collect_all(self) -> None:
        for stored, cause in self._seen.values():
            self._collect(stored, cause)

    async def commit(self) -> None:
        """Write every change collected so far into the transaction, set-based (one statement per table however
        many decisions): remembered decision ids, votes, audit rows, final statuses, and the outbox rows of the
        events (with their CDEvents)."""
        self._collect_all()
        written, self._written = self._written, []
        remembered, self._remembered = self._remembered, []
        audit: list[AuditRow] = []
        votes: list[NewVote] = []
        replaced: list[str] = []
        closed: dict[str, StoredGate] = {}
        for index, item in enumerate(written):
            await cooperate(index)  # building and encoding each event and its CDEvent: CPU only, let a decision in
            if isinstance(item, AuditRow):
                audit.append(item)
            elif isinstance(item, OutboxRecord):
                self.tx.outbox.add(item)
            else:
                audit.append(self._write(item, votes, replaced))
                if isinstance(item.event, _CLOSING):
                    closed[item.stored.id] = item.stored
        conn = self.tx.conn
        await self.repository.remember_decisions(conn, remembered)
        await self.repository.record_votes(conn, votes, replaced)
        await self.repository.audit(conn, audit)
        closing = []
        for stored in closed.values():
            gate = stored.gate
            assert gate.closed_at is not None  # a closing event closed it
            closing.append((stored.id, gate.status.value, gate.closed_at))
        await self.repository.close_gates(conn, closing)

    def _write(self, change: _Change, votes: list[NewVote], replaced: list[str]) -> AuditRow:
        """The outbox rows of `change` (added), its vote (appended to `votes`, with the one it replaces to
        `replaced`) and its audit row (returned)."""
        stored, event, cause = change.stored, change.event, change.cause
        self.tally.events(stored, [event])
        if isinstance(event, domain_events.VoteRecorded):
            vote = stored.gate.vote(event.decision_id)
            assert vote is not None  # the event records this vote
            votes.append(
                NewVote(
                    gate_id=stored.id,
                    decision_id=vote.decision_id,
                    source=vote.source,
                    approver=vote.approver.user_id,
                    status=vote.status.value,
                    comment=vote.comment,
                    inputs=vote.inputs,
                    decided_at=vote.decided_at,
                    at=vote.at,
                )
            )
            if event.replaced_decision_id is not None:
                replaced.append(event.replaced_decision_id)
        superseded_by = None
        if isinstance(event, domain_events.GateRejected) and event.superseded_by is not None:
            superseded_by = self._ids_by_key.get(event.superseded_by)
        data = to_wire(event, stored, superseded_by=superseded_by, source=cause.source)
        self.tx.outbox.add(outbox_record(data, at=event.at, traceparent=cause.traceparent))
        cdevent = to_cdevent(event, stored, self.links)
        if cdevent is not None:
            self.tx.outbox.add(cdevent_record(cdevent, traceparent=cause.traceparent))
        decision_id = getattr(event, "decision_id", None)
        approver = getattr(event, "approver", None)
        return AuditRow(
            gate_id=stored.id,
            kind=audit_kind(event),
            at=event.at,
            decision_id=decision_id,
            actor=approver.user_id if isinstance(approver, Member) else None,
            reason=event.reason.value if isinstance(event, domain_events.DecisionRefused) else None,
            detail={
                "event": data.event_type,
                # A cancel's reason says who or what withdrew the gate ("cancelled: aborted by dana: wrong tag").
                "detail": event.reason
                if isinstance(event, domain_events.GateCancelled)
                else getattr(event, "detail", ""),
                # A service principal that decided for the approver: the audit names both.
                **({"submitted_by": cause.submitted_by} if cause.submitted_by and decision_id else {}),
            },
        )
