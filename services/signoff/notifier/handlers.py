"""The notifier's consumer handler and reminder scheduler: gate events become delivery rows.

Everything a handler writes (the gate it now knows, its deliveries, its reminder schedule) goes into the consumer
loop's transaction (`uow.conn`), next to the inbox row: a redelivered event adds nothing, a crash before the commit
leaves nothing half-written. Sending is the dispatcher's job (`dispatcher.py`), never the handler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.contracts.events import EligibleApprover, Vote
from signoff.notifier.domain import ApprovalView, OutcomeView, PlannedDelivery, Routing, render, to_json
from signoff.notifier.domain.render import Document, RenderedMessage, document
from signoff.notifier.domain.routing import slack_bot
from signoff.notifier.domain.slack import render_slack_bot, render_update
from signoff.notifier.domain.view import NotificationView
from signoff.notifier.repository import KnownGate, NewDelivery, NotifierRepository
from signoff.runtime import tracing
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.consumer import Received, UnitOfWork

log = structlog.get_logger(__name__)

OUTCOMES = (wire.GateApproved, wire.GateRejected, wire.GateExpired, wire.GateCancelled)
IGNORED = (wire.DecisionRefused,)
"""Gate-topic events the notifier reads and deliberately does not notify about (votes only update the messages of
Slack channels in bot mode)."""

ESCALATION_PREFIX = "escalation:"


class UnsupportedEvent(ValueError):
    """An event type the notifier does not consume (dead-lettered by the loop)."""


@dataclass(frozen=True)
class Notifying:
    """What turns a view into delivery rows: routing, catalog, links base and retry budget."""

    routing: Routing
    catalog: Catalog
    approval_page_url: str
    max_attempts: int

    def is_bot(self, channel: str) -> bool:
        """Whether routing channel `channel` is a Slack channel in bot mode."""
        return slack_bot(self.routing.channels[channel])

    def rows(
        self,
        view: NotificationView,
        planned: Sequence[PlannedDelivery],
        kind: str,
        traceparent: str | None = None,
        *,
        bot_payload: dict[str, Any] | None = None,
    ) -> list[NewDelivery]:
        """Delivery rows of `planned`, each with its channel's rendering of `view` (rendered once per type) and
        the `traceparent` their requests carry. Slack channels in bot mode get `bot_payload` (default: the request
        with its Approve / Reject buttons)."""
        rendered = {}
        rows = []
        doc: Document | None = None  # what every channel type shows: built once for all of them
        for delivery in planned:
            rendering = "slack-bot" if self.is_bot(delivery.channel) else delivery.channel_type
            if rendering not in rendered:
                payload = bot_payload
                if rendering == "slack-bot" and payload is None and isinstance(view, ApprovalView):
                    payload = render_slack_bot(view)
                if rendering == "slack-bot" and payload is not None:
                    rendered[rendering] = RenderedMessage("slack", "application/json", to_json(payload))
                else:  # other channels; and a refused request, which bot mode posts as a message of its own
                    doc = doc or document(view)
                    rendered[rendering] = render(view, delivery.channel_type, doc=doc)
            message = rendered[rendering]
            rows.append(
                NewDelivery(
                    idempotency_key=delivery.idempotency_key,
                    gate_id=view.gate_id,
                    event_id=delivery.event_id,
                    kind=kind,
                    purpose=delivery.purpose,
                    channel=delivery.channel,
                    channel_type=delivery.channel_type,
                    recipient=delivery.recipient,
                    max_attempts=self.max_attempts,
                    content_type=message.content_type,
                    subject=message.subject,
                    body=message.body,
                    html=message.alternative_html,
                    headers=message.headers,
                    traceparent=traceparent,
                )
            )
        return rows


class NotifierHandler:
    """`BatchHandler` of the notifier: GateOpened fans out, outcomes tell the same recipients, votes and refusals
    are read and skipped, any other type is refused (dead-lettered)."""

    def __init__(
        self, notifying: Notifying, *, clock: Clock | None = None, repository: NotifierRepository | None = None
    ) -> None:
        self.notifying = notifying
        self.clock = clock or SystemClock()
        self.repository = repository or NotifierRepository()

    async def apply(self, uow: UnitOfWork, batch: Sequence[Received]) -> None:
        planned: list[tuple[str, int, int]] = []  # (gate id, deliveries, reminders scheduled) of each GateOpened
        opening: list[wire.Event] = []  # GateOpened not yet planned: planned together, a few statements in all
        for received in batch:
            data = received.event.data
            if isinstance(data, wire.GateOpened):
                opening.append(received.event)
                continue
            # A later event of a gate reads what its GateOpened wrote: plan the GateOpened before it first.
            planned += await self._opened(uow.conn, opening)
            opening = []
            if isinstance(data, OUTCOMES):
                await self._outcome(uow.conn, received.event)
            elif isinstance(data, wire.VoteRecorded):
                await self._vote(uow.conn, received.event)
            elif isinstance(data, wire.RequestRefused):
                await self._request_refused(uow.conn, received.event)
            elif isinstance(data, IGNORED):
                continue
            else:
                raise UnsupportedEvent(f"the notifier does not consume {received.event.type}")
        planned += await self._opened(uow.conn, opening)
        if planned:
            # One line per batch (a burst of gates must not cost a line each); each gate at debug.
            log.info(
                "gate_opened_planned",
                gates=len(planned),
                deliveries=sum(deliveries for _, deliveries, _ in planned),
                scheduled=sum(scheduled for _, _, scheduled in planned),
                gate_ids=[gate_id for gate_id, _, _ in planned[:20]],
            )

    async def _opened(self, conn: asyncpg.Connection, events: Sequence[wire.Event]) -> list[tuple[str, int, int]]:
        """Plan the deliveries and reminders of gates, in three statements for all of them; returns (gate id,
        deliveries, reminders) of each gate not planned before."""
        if not events:
            return []
        now = self.clock.now()
        first: dict[str, wire.Event] = {}
        for event in events:
            first.setdefault(event.data.gate_id, event)  # a redelivered GateOpened in the same batch: once
        fresh = await self.repository.remember_gates(
            conn,
            [
                KnownGate(
                    gate_id,
                    event.id,
                    event.data.model_dump_json(),
                    event.data.opened_at,
                    event.data.expires_at,
                    event.traceparent,
                )
                for gate_id, event in first.items()
            ],
        )
        n = self.notifying
        rows: list[NewDelivery] = []
        schedule: list[tuple[str, str, datetime]] = []
        counts: list[tuple[str, int, int]] = []
        for gate_id, event in first.items():
            if gate_id not in fresh:
                log.info("gate_already_notified", gate_id=gate_id)
                continue
            data: wire.GateOpened = event.data
            view = ApprovalView.from_gate_opened(event, n.catalog, now=now, approval_page_url=n.approval_page_url)
            planned = n.routing.deliveries_for(view, data.eligible_approvers)
            rows += n.rows(view, planned, "opened", event.traceparent)
            items = n.routing.reminder_times(data.opened_at, data.expires_at, now)
            escalation = n.routing.escalation_time(data.opened_at, data.expires_at)
            if escalation is not None:
                group, when = escalation
                items.append((f"{ESCALATION_PREFIX}{group}", when))
            schedule += [(gate_id, purpose, due) for purpose, due in items]
            counts.append((gate_id, len(planned), len(items)))
        await self.repository.insert_deliveries(conn, rows, now)
        await self.repository.schedule_many(conn, schedule)
        for gate_id, deliveries, scheduled in counts:
            log.debug("gate_opened_planned", gate_id=gate_id, deliveries=deliveries, scheduled=scheduled)
        return counts

    async def _outcome(self, conn: asyncpg.Connection, event: wire.Event) -> None:
        data = event.data
        now = self.clock.now()
        row = await self.repository.gate(conn, data.gate_id)
        if row is None:
            # Events of one gate share a partition, in order: this only happens for gates opened before the
            # notifier's topic history starts. Nobody to tell: the recipients came with GateOpened.
            log.warning("outcome_for_unknown_gate", gate_id=data.gate_id, event_type=event.type)
            return
        opened = wire.GateOpened.model_validate(row["opened"])
        n = self.notifying
        view = OutcomeView.from_event(event, approval_page_url=n.approval_page_url, opened=opened)
        planned = n.routing.deliveries_for(view, opened.eligible_approvers)
        update = None
        if any(n.is_bot(delivery.channel) for delivery in planned):
            # Bot-mode Slack channels update the request's message: the outcome line replaces the buttons.
            request = ApprovalView.from_gate_opened(
                opened, n.catalog, now=now, approval_page_url=n.approval_page_url, event_id=row["event_id"]
            )
            update = render_update(request, [], data)
        rows = n.rows(view, planned, view.kind, event.traceparent, bot_payload=update)
        inserted = await self.repository.insert_deliveries(conn, rows, now)
        await self.repository.close_gate(conn, data.gate_id, view.kind, now)
        log.info("gate_outcome_planned", gate_id=data.gate_id, outcome=view.kind, deliveries=inserted)

    async def _vote(self, conn: asyncpg.Connection, event: wire.Event) -> None:
        """A counted vote on a pending gate: the bot-mode Slack messages show the votes so far (other channels are
        told only the outcome)."""
        data: wire.VoteRecorded = event.data
        n = self.notifying
        if not any(slack_bot(channel) for channel in n.routing.channels.values()):
            return
        row = await self.repository.gate(conn, data.gate_id)
        if row is None or row["status"] != "pending":
            return
        votes = await self.repository.record_vote(conn, data.gate_id, data.vote.model_dump(mode="json"))
        opened = wire.GateOpened.model_validate(row["opened"])
        now = self.clock.now()
        request = ApprovalView.from_gate_opened(
            opened, n.catalog, now=now, approval_page_url=n.approval_page_url, event_id=row["event_id"]
        )
        update = render_update(request, [Vote.model_validate(vote) for vote in votes])
        view = replace(request, event_id=event.id)  # the vote's own idempotency keys
        planned = [p for p in n.routing.deliveries_for(view, opened.eligible_approvers) if n.is_bot(p.channel)]
        rows = n.rows(view, planned, "vote", event.traceparent, bot_payload=update)
        inserted = await self.repository.insert_deliveries(conn, rows, now)
        log.info("vote_update_planned", gate_id=data.gate_id, deliveries=inserted)

    async def _request_refused(self, conn: asyncpg.Connection, event: wire.Event) -> None:
        """No gate was opened, so no approver was told: tell the pipeline's triggerer why it fails, on the channels
        of the `*` routes (e-mail to the triggerer's address)."""
        data: wire.RequestRefused = event.data
        n = self.notifying
        view = OutcomeView.from_event(event, approval_page_url=n.approval_page_url)
        person = data.triggered_by
        recipients = [EligibleApprover(**person.model_dump())] if person is not None else []
        planned = n.routing.deliveries_for(view, recipients)
        inserted = await self.repository.insert_deliveries(
            conn, n.rows(view, planned, view.kind, event.traceparent), self.clock.now()
        )
        log.info("request_refusal_planned", key=view.gate_id, deliveries=inserted)


async def send_due_reminders(
    pool: asyncpg.Pool,
    notifying: Notifying,
    clock: Clock,
    *,
    repository: NotifierRepository | None = None,
    limit: int = 200,
) -> int:
    """One pass: turn due reminders / escalations of still-pending gates into deliveries; returns how many
    schedule entries were handled. Claimed with SKIP LOCKED and written in one transaction: replicas share the
    work and each reminder is planned once."""
    repository = repository or NotifierRepository()
    now = clock.now()
    async with pool.acquire() as conn, conn.transaction():
        due = await repository.claim_due_schedule(conn, now, limit)
        for row in due:
            # A reminder continues the trace of the gate it restates, under a span of this pass.
            with tracing.span(
                "notifier reminder",
                parent=row["traceparent"],
                attributes={"signoff.gate_id": row["gate_id"], "signoff.purpose": row["purpose"]},
            ):
                await _plan_scheduled(conn, repository, notifying, row, now)
    return len(due)


async def _plan_scheduled(
    conn: asyncpg.Connection,
    repository: NotifierRepository,
    notifying: Notifying,
    row: asyncpg.Record,
    now: datetime,
) -> None:
    """Plan the deliveries of one due reminder or escalation and mark it done."""
    opened = wire.GateOpened.model_validate(row["opened"])
    base = ApprovalView.from_gate_opened(
        opened,
        notifying.catalog,
        now=now,
        approval_page_url=notifying.approval_page_url,
        event_id=row["event_id"],
    )
    purpose: str = row["purpose"]
    if purpose.startswith(ESCALATION_PREFIX):
        group = purpose.removeprefix(ESCALATION_PREFIX)
        view = base.restated(now=now, headline=f"Escalated to {group}: approval needed", purpose=purpose)
        members = _members_of(opened.eligible_approvers, group)
        planned = notifying.routing.deliveries_for(view, members, groups=[group], purpose=purpose)
        kind = "escalation"
    else:
        view = base.restated(now=now, headline="Reminder: approval needed", purpose=purpose)
        planned = notifying.routing.deliveries_for(view, opened.eligible_approvers, purpose=purpose)
        kind = "reminder"
    traceparent = tracing.current_traceparent(row["traceparent"])
    inserted = await repository.insert_deliveries(conn, notifying.rows(view, planned, kind, traceparent), now)
    await repository.schedule_done(conn, row["gate_id"], purpose, now)
    log.info("scheduled_notice_planned", gate_id=row["gate_id"], purpose=purpose, deliveries=inserted)


def _members_of(approvers: Sequence[EligibleApprover], group: str) -> list[EligibleApprover]:
    # The directory is the approval service's: the notifier knows the e-mail addresses GateOpened listed. Chat
    # and webhook channels routed to the escalation group reach it regardless (one delivery per channel).
    return [approver for approver in approvers if group in approver.groups]
