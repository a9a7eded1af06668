"""From the approval domain's gate events to CDEvents approval events (docs/events.md has the table).

Pure: the handler calls `to_cdevent` for each domain event it publishes and writes the result to the outbox in the
same transaction, so a CDEvent exists exactly when the gate event it mirrors does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote

from signoff.approval.domain import events as domain_events
from signoff.approval.domain.model import OutcomeCause
from signoff.approval.mapping import EVENT_SOURCE, StoredGate
from signoff.contracts.cdevents import (
    APPROVAL_CLOSED,
    APPROVAL_CREATED,
    APPROVAL_UPDATED,
    ApprovalCDEvent,
    ApprovalContent,
    ApprovalSubject,
    CDEventContext,
    ClosedStatus,
    Decision,
    chain_id,
    user_urn,
)
from signoff.kernel import DecisionStatus

SERVICE_URN = EVENT_SOURCE
"""The responder of an outcome no person decided (a timeout action, an expiry, a cancel, a newer run)."""

_DECISION = {DecisionStatus.APPROVE: Decision.APPROVED, DecisionStatus.REJECT: Decision.REJECTED}


@dataclass(frozen=True)
class ApprovalLinks:
    """Where the CDEvents' URLs point: the api's public URL (`SIGNOFF_APPROVAL_PAGE_URL`, as the notifier's links)."""

    base_url: str

    def gate_page(self, gate_id: str) -> str:
        """The gate's approval page (`approvalDetailsUrl`)."""
        return f"{self.base_url.rstrip('/')}/gates/{quote(gate_id, safe='')}"

    def execution(self, execution_id: str) -> str:
        """The execution the gate holds up (`resourceTargetUrl`), on the api."""
        return f"{self.base_url.rstrip('/')}/api/v1/executions/{quote(execution_id, safe='')}"


def to_cdevent(
    event: domain_events.GateEvent, stored: StoredGate, links: ApprovalLinks, *, event_id: str | None = None
) -> ApprovalCDEvent | None:
    """The CDEvent mirroring `event` (already applied to `stored.gate`), or None for an event CDEvents has no word
    for (a refused decision: it changed nothing). `event_id` defaults to a random UUID."""
    match event:
        case domain_events.GateOpened():
            return _cdevent(
                APPROVAL_CREATED,
                event,
                stored,
                links,
                requestor=user_urn(stored.request.triggered_by.user),
                event_id=event_id,
            )
        case domain_events.VoteRecorded():
            return _cdevent(
                APPROVAL_UPDATED,
                event,
                stored,
                links,
                responder=user_urn(event.approver.user_id),
                decision=_DECISION[event.status],
                event_id=event_id,
            )
        case domain_events.GateApproved():
            by_votes = event.cause is OutcomeCause.VOTES and event.approvers
            responder = user_urn(event.approvers[-1].user_id) if by_votes else SERVICE_URN
            return _closed(event, stored, links, ClosedStatus.APPROVED, responder, Decision.APPROVED, event_id)
        case domain_events.GateRejected():
            responder = user_urn(event.rejected_by.user_id) if event.rejected_by else SERVICE_URN
            return _closed(event, stored, links, ClosedStatus.REJECTED, responder, Decision.REJECTED, event_id)
        case domain_events.GateExpired():
            return _closed(event, stored, links, ClosedStatus.EXPIRED, SERVICE_URN, Decision.REJECTED, event_id)
        case domain_events.GateCancelled():
            return _closed(event, stored, links, ClosedStatus.CANCELLED, SERVICE_URN, Decision.REJECTED, event_id)
    return None


def _closed(
    event: domain_events.GateEvent,
    stored: StoredGate,
    links: ApprovalLinks,
    status: ClosedStatus,
    responder: str,
    decision: Decision,
    event_id: str | None,
) -> ApprovalCDEvent:
    # approval.closed requires a responder and a decision: an outcome no person decided names the service, whose
    # decision is to let the pipeline on (approved) or not (rejected); `status` says what the outcome was.
    return _cdevent(
        APPROVAL_CLOSED,
        event,
        stored,
        links,
        responder=responder,
        decision=decision,
        status=status,
        event_id=event_id,
    )


def _cdevent(
    cdevent_type: str,
    event: domain_events.GateEvent,
    stored: StoredGate,
    links: ApprovalLinks,
    *,
    requestor: str | None = None,
    responder: str | None = None,
    decision: Decision | None = None,
    status: ClosedStatus | None = None,
    event_id: str | None = None,
) -> ApprovalCDEvent:
    execution_id = stored.gate.key.execution
    return ApprovalCDEvent(
        context=CDEventContext(
            id=event_id or str(uuid.uuid4()),
            source=EVENT_SOURCE,
            type=cdevent_type,
            timestamp=event.at,
            chain_id=chain_id(execution_id),
        ),
        subject=ApprovalSubject(
            id=stored.id,
            source=EVENT_SOURCE,
            content=ApprovalContent(
                approval_details_url=links.gate_page(stored.id),
                resource_target_url=links.execution(execution_id),
                requestor=requestor,
                responder=responder,
                decision=decision,
                status=status,
            ),
        ),
    )
