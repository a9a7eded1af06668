"""Between the wire (signoff.contracts) and the domain (signoff.approval.domain), and from stored rows to gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from signoff import contracts as wire
from signoff.approval.domain import events as domain_events
from signoff.approval.domain.gate import Gate
from signoff.approval.domain.model import Directory, Member, OutcomeCause, Vote
from signoff.approval.domain.requests import RequestedRule
from signoff.contracts.events import ApprovalCause, EligibleApprover, EnvironmentType, GateDetails, RejectionCause
from signoff.contracts.events import DecisionStatus as WireStatus
from signoff.contracts.events import RefusalReason as WireRefusal
from signoff.contracts.events import Vote as WireVote
from signoff.kernel import ApprovalRule, ApproverInput, DecisionStatus, GateKey, GateStatus, Policy, TimeoutAction

EVENT_SOURCE = "urn:signoff:approval"

_TO_WIRE_STATUS = {DecisionStatus.APPROVE: WireStatus.APPROVED, DecisionStatus.REJECT: WireStatus.REJECTED}
_TO_DOMAIN_STATUS = {wire_status: status for status, wire_status in _TO_WIRE_STATUS.items()}


# ---------------------------------------------------------------------------------------------------- wire -> domain


def domain_key(key: wire.GateKey) -> GateKey:
    return GateKey(key.pipeline_id, key.execution_id, key.stage_id, key.step_id, key.attempt)


def wire_key(key: GateKey) -> wire.GateKey:
    return wire.GateKey(
        pipeline_id=key.pipeline, execution_id=key.execution, stage_id=key.stage, step_id=key.step, attempt=key.attempt
    )


def domain_policy(policy: wire.ApprovalPolicy) -> Policy:
    rules = tuple(
        ApprovalRule(user_groups=tuple(rule.user_groups), users=tuple(rule.users), minimum_count=rule.minimum_count)
        for rule in policy.all_rules()
    )
    return Policy(rules=rules, disallow_pipeline_executor=policy.disallow_pipeline_executor)


def requested_rules(policy: wire.ApprovalPolicy) -> tuple[RequestedRule, ...]:
    """The policy's rules as sent, each with the request field it came from (for refusal reasons)."""
    top = (
        [RequestedRule("policy", tuple(policy.user_groups), tuple(policy.users), policy.minimum_count)]
        if policy.names_someone()
        else []
    )
    return (
        *top,
        *(
            RequestedRule(f"policy.rules[{index}]", tuple(rule.user_groups), tuple(rule.users), rule.minimum_count)
            for index, rule in enumerate(policy.rules)
        ),
    )


def domain_inputs(inputs: list[wire.ApproverInput]) -> tuple[ApproverInput, ...]:
    return tuple(
        ApproverInput(
            name=item.name,
            default_value=item.default_value or None,
            required=item.required,
            allowed_values=tuple(item.allowed_values) or None,
        )
        for item in inputs
    )


def domain_status(status: WireStatus) -> DecisionStatus:
    return _TO_DOMAIN_STATUS[status]


def member_from_row(row: Mapping[str, Any]) -> Member:
    return Member(user_id=row["user_id"], email=row.get("email"), chat_handles=row.get("chat_handles") or {})


def members_to_json(directory: Directory) -> dict[str, list[dict[str, Any]]]:
    return {
        group: [{"user_id": m.user_id, "email": m.email, "chat_handles": dict(m.chat_handles)} for m in members]
        for group, members in directory.members_by_group.items()
    }


# ---------------------------------------------------------------------------------------------------- stored gates

_POLICY = TypeAdapter(wire.ApprovalPolicy)
_INPUTS = TypeAdapter(list[wire.ApproverInput])


def environment_type(request: wire.ApprovalRequested) -> str:
    """`production` when the gate's stage deploys to a production environment, else `preproduction` when to a
    pre-production one, else `none` (no environment, or of unknown type). Stored with the gate (a metrics label)."""
    types = {environment.type for environment in request.current_stage.environments}
    if EnvironmentType.PRODUCTION in types:
        return "production"
    if EnvironmentType.PRE_PRODUCTION in types:
        return "preproduction"
    return "none"


class StoredGate:
    """The aggregate the repository loads: the domain gate (with its votes), its id and what its wire events need
    besides. The request document is validated only when something reads `request` (a decision never does: it
    needs the gate, which is rebuilt from its own columns)."""

    def __init__(
        self,
        id: str,
        gate: Gate,
        request: wire.ApprovalRequested | None = None,
        *,
        request_json: Any = None,
        traceparent: str | None = None,
        environment_type: str | None = None,
    ) -> None:
        """`request` (the validated request) or `request_json` (the stored document, validated on first use)."""
        self.id = id
        self.gate = gate
        self._request = request
        self._request_json = request_json
        self.traceparent = traceparent
        """The trace of the run, stored with the gate (what the expiry loop's outcome continues)."""
        self.environment_type = environment_type if environment_type is not None else _environment_type_of(request)
        """The `environment_type` metrics label of the gate's stage (see `environment_type`)."""

    @property
    def has_request(self) -> bool:
        """Whether the request document was loaded with the gate (`request` can be read)."""
        return self._request is not None or self._request_json is not None

    @property
    def request(self) -> wire.ApprovalRequested:
        """The approval request that opened the gate."""
        if self._request is None:
            if self._request_json is None:
                raise LookupError(f"gate {self.id} was loaded without its request document")
            self._request = wire.ApprovalRequested.model_validate(self._request_json)
        return self._request

    @property
    def status(self) -> GateStatus:
        return self.gate.status


def _environment_type_of(request: wire.ApprovalRequested | None) -> str:
    return environment_type(request) if request is not None else "none"


def gate_from_row(row: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> StoredGate:
    """The aggregate of a gate row and its vote rows (oldest first). The gate is rebuilt from its own columns (key,
    `policy`, `inputs`, directory snapshot, ...); the request document, when the row has it, is kept unvalidated."""
    directory = Directory(
        {group: [member_from_row(m) for m in members] for group, members in (row["members_by_group"] or {}).items()}
    )
    domain_votes = [
        Vote(
            decision_id=v["decision_id"],
            approver=Member(user_id=v["approver"]),
            status=DecisionStatus(v["status"]),
            comment=v["comment"],
            inputs=dict(v["inputs"] or {}),
            at=v["at"],
            source=v["source"],
            decided_at=v["decided_at"],
        )
        for v in votes
    ]
    gate = Gate(
        key=GateKey(row["pipeline_id"], row["execution_id"], row["stage_id"], row["step_id"], row["attempt"]),
        policy=domain_policy(_POLICY.validate_python(row["policy"])),
        inputs=domain_inputs(_INPUTS.validate_python(row["inputs"])),
        directory=directory,
        pipeline_executor=row["pipeline_executor"],
        token=row["token"],
        opened_at=row["opened_at"],
        expires_at=row["expires_at"],
        timeout_action=TimeoutAction(row["timeout_action"]),
        status=GateStatus(row["status"]),
        votes=domain_votes,
        closed_at=row["closed_at"],
    )
    return StoredGate(
        row["id"],
        gate,
        request_json=row.get("request"),
        traceparent=row.get("traceparent"),
        environment_type=row.get("environment_type") or "none",
    )


# ---------------------------------------------------------------------------------------------------- domain -> wire


def _wire_vote(vote: Vote, directory: Directory) -> WireVote:
    return WireVote(
        decision_id=vote.decision_id,
        source=vote.source,
        approver=vote.approver.user_id,
        approver_email=vote.approver.email or directory.email_of(vote.approver.user_id),
        status=_TO_WIRE_STATUS[vote.status],
        comment=vote.comment,
        inputs=dict(vote.inputs),
        decided_at=vote.decided_at,
    )


def _current_votes(stored: StoredGate) -> list[WireVote]:
    return [_wire_vote(vote, stored.gate.directory) for vote in stored.gate.current_votes()]


def eligible_approvers(stored_gate: Gate) -> list[EligibleApprover]:
    groups_of: dict[str, list[str]] = {}
    for group, members in stored_gate.directory.members_by_group.items():
        for member in members:
            groups_of.setdefault(member.key, []).append(group)
    return [
        EligibleApprover(
            user=member.user_id,
            email=member.email,
            slack=member.chat_handles.get("slack"),
            teams=member.chat_handles.get("teams"),
            groups=groups_of.get(member.key, []),
        )
        for member in stored_gate.eligible_approvers()
    ]


def to_wire(
    event: domain_events.GateEvent,
    stored: StoredGate,
    *,
    superseded_by: str | None = None,
    source: str | None = None,
) -> wire.EventData:
    """The wire data of a domain event about `stored` (after the event was applied to it)."""
    gate_id, key = stored.id, wire_key(event.gate_key) if event.gate_key else wire_key(stored.gate.key)
    match event:
        case domain_events.GateOpened():
            # The request's fields as they are (validated models): rebuilding them from a dump would validate the
            # whole request again for every gate of a burst.
            request = stored.request
            details = {
                name: value for name in GateDetails.model_fields if (value := getattr(request, name)) is not None
            }
            return wire.GateOpened(
                **details,
                gate_id=gate_id,
                token=event.token,
                opened_at=event.at,
                expires_at=event.expires_at,
                eligible_approvers=eligible_approvers(stored.gate),
            )
        case domain_events.VoteRecorded():
            vote = stored.gate.vote(event.decision_id)
            assert vote is not None  # the event records this vote
            return wire.VoteRecorded(
                gate_id=gate_id,
                key=key,
                vote=_wire_vote(vote, stored.gate.directory),
                replaced_earlier_vote=event.replaced_decision_id is not None,
                approved_by=[
                    v.approver.user_id for v in stored.gate.current_votes() if v.status is DecisionStatus.APPROVE
                ],
                recorded_at=event.at,
            )
        case domain_events.GateApproved():
            return wire.GateApproved(
                gate_id=gate_id,
                key=key,
                cause=ApprovalCause.TIMEOUT_ACTION if event.cause is OutcomeCause.TIMEOUT else ApprovalCause.APPROVERS,
                votes=_current_votes(stored),
                inputs=dict(event.inputs),
                approved_at=event.at,
            )
        case domain_events.GateRejected():
            cause = {
                OutcomeCause.VOTES: RejectionCause.APPROVER,
                OutcomeCause.TIMEOUT: RejectionCause.TIMEOUT_ACTION,
                OutcomeCause.SUPERSEDED: RejectionCause.SUPERSEDED,
            }[event.cause]
            return wire.GateRejected(
                gate_id=gate_id,
                key=key,
                cause=cause,
                votes=_current_votes(stored),
                rejected_by=event.rejected_by.user_id if event.rejected_by else None,
                comment=event.comment,
                superseded_by=superseded_by,
                rejected_at=event.at,
            )
        case domain_events.GateExpired():
            return wire.GateExpired(gate_id=gate_id, key=key, votes=_current_votes(stored), expired_at=event.at)
        case domain_events.GateCancelled():
            return wire.GateCancelled(gate_id=gate_id, key=key, reason=event.reason, cancelled_at=event.at)
        case domain_events.DecisionRefused():
            return wire.DecisionRefused(
                decision_id=event.decision_id,
                source=source or "unknown",
                approver=event.approver.user_id if event.approver else "unknown",
                gate_id=gate_id,
                key=key,
                reason=WireRefusal(event.reason.value),
                detail=event.detail,
                refused_at=event.at,
            )
    raise TypeError(f"not a gate event: {event!r}")  # pragma: no cover


def audit_kind(event: domain_events.GateEvent) -> str | None:
    """The audit kind of a domain event."""
    match event:
        case domain_events.VoteRecorded():
            return "vote"
        case domain_events.DecisionRefused():
            return "refused"
        case domain_events.GateCancelled():
            return "cancel"
        case domain_events.GateOpened():
            return "requested"
    return "outcome"
