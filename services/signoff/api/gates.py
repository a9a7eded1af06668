"""Gate documents for the api: the approval schema's rows, judged by the approval domain, resolved by the catalog.

Read-only: the api never writes the approval tables. Whether a user may decide, and how far each rule of the policy
is, are the approval domain's answers (`Gate.is_eligible`, `Gate.progress`, ...), not rules re-implemented here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from signoff.api import models
from signoff.approval.mapping import StoredGate, gate_from_row
from signoff.catalog import Catalog
from signoff.contracts.events import DecisionStatus, RefusalReason
from signoff.kernel import DecisionStatus as KernelStatus
from signoff.kernel import GateStatus, user_key
from signoff.notifier.domain.view import humanize_time_left, resolve_stage

_WIRE_STATUS = {KernelStatus.APPROVE: DecisionStatus.APPROVED, KernelStatus.REJECT: DecisionStatus.REJECTED}


def wire_status(status: str) -> DecisionStatus:
    """A stored vote's status (`approve` / `reject`) in the API's words (`Approved` / `Rejected`)."""
    return _WIRE_STATUS[KernelStatus(status)]


def links(base_url: str, gate_id: str) -> models.Links:
    base = base_url.rstrip("/")
    page = f"{base}/gates/{gate_id}"
    return models.Links(
        self=f"{base}/api/v1/gates/{gate_id}",
        page=page,
        approve=f"{page}?action=approve",
        reject=f"{page}?action=reject",
    )


def groups_of(policy: dict[str, Any]) -> list[str]:
    """The user groups a stored policy (the wire model's JSON) names, in any rule."""
    groups = set(policy.get("user_groups") or [])
    for rule in policy.get("rules") or []:
        groups.update(rule.get("user_groups") or [])
    return sorted(groups)


def summary(row: Mapping[str, Any], *, now: datetime, base_url: str) -> models.GateSummary:
    """A gate row as one line of a list (its summary columns: no request document, no votes)."""
    return models.GateSummary(
        gate_id=row["id"],
        pipeline_id=row["pipeline_id"],
        pipeline_name=row["pipeline_name"] or row["pipeline_id"],
        execution_id=row["execution_id"],
        stage_id=row["stage_id"],
        stage_name=row["stage_name"] or row["stage_id"],
        step_id=row["step_id"],
        step_name=row["step_name"] or row["step_id"],
        attempt=row["attempt"],
        status=row["status"],
        triggered_by=row["pipeline_executor"] or "",
        opened_at=row["opened_at"],
        expires_at=row["expires_at"],
        time_left=humanize_time_left(row["expires_at"], now) if row["status"] == "pending" else row["status"],
        environments=list(row["environments"]),
        groups=groups_of(row["policy"]),
        links=links(base_url, row["id"]),
    )


def your_turn(stored: StoredGate, user: str) -> models.YourTurn:
    """May `user` decide `stored` now? The domain's rules, in the order the approval service applies them."""
    gate = stored.gate
    current = next((v for v in gate.current_votes() if v.approver.key == user_key(user)), None)
    current_vote = _WIRE_STATUS[current.status] if current is not None else None
    if gate.status is not GateStatus.PENDING:
        return models.YourTurn(may_decide=False, reason=RefusalReason.GATE_CLOSED, current_vote=current_vote)
    if gate.is_pipeline_executor(user):
        return models.YourTurn(may_decide=False, reason=RefusalReason.SELF_APPROVAL, current_vote=current_vote)
    if not gate.is_eligible(user):
        return models.YourTurn(may_decide=False, reason=RefusalReason.NOT_ELIGIBLE, current_vote=current_vote)
    return models.YourTurn(may_decide=True, current_vote=current_vote)


def progress_words(approvals: int, minimum: int) -> str:
    """`1 of 2 approvers`; past the minimum (votes counted together as the gate closed), `3 approvers, 2 needed`
    rather than `3 of 2`."""
    noun = "approver" if minimum == 1 else "approvers"
    if approvals > minimum:
        return f"{approvals} approvers, {minimum} needed"
    return f"{approvals} of {minimum} {noun}"


def policy_progress(stored: StoredGate) -> models.PolicyProgress:
    """Per rule: who counted so far out of how many, in words (`1 of 2 approvers (group sre)`)."""
    gate = stored.gate
    rules = []
    for rule, progress in zip(gate.policy.rules, gate.progress(), strict=True):
        who = ", ".join([*(f"group {g}" for g in rule.user_groups), *(f"user {u}" for u in rule.users)])
        rules.append(
            models.RuleProgress(
                user_groups=list(rule.user_groups),
                users=list(rule.users),
                minimum_count=rule.minimum_count,
                approved_by=list(progress.approved_by),
                satisfied=progress.satisfied,
                text=f"{progress_words(len(progress.approved_by), rule.minimum_count)} ({who})",
            )
        )
    return models.PolicyProgress(
        rules=rules,
        disallow_pipeline_executor=gate.policy.disallow_pipeline_executor,
        text="; ".join(rule.text for rule in rules),
    )


def load(row: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> StoredGate:
    """The domain gate of a row and its votes."""
    return gate_from_row(row, list(votes))


def detail(
    row: Mapping[str, Any],
    votes: Sequence[Mapping[str, Any]],
    *,
    user: str,
    now: datetime,
    base_url: str,
    catalog: Catalog,
) -> models.GateDetail:
    """Everything about one gate, for `user`."""
    stored = load(row, votes)
    request = stored.request
    latest = {v.decision_id for v in stored.gate.current_votes()}
    return models.GateDetail(
        **summary(row, now=now, base_url=base_url).model_dump(),
        message=request.message or request.message_template,
        message_template=request.message_template,
        token=row["token"],
        closed_at=row["closed_at"],
        timeout_action=row["timeout_action"],
        policy=policy_progress(stored),
        inputs=list(request.approver_inputs),
        votes=[
            models.VoteView(
                decision_id=v["decision_id"],
                approver=v["approver"],
                approver_email=stored.gate.directory.email_of(v["approver"]),
                status=wire_status(v["status"]),
                comment=v["comment"],
                inputs=dict(v["inputs"] or {}),
                source=v["source"],
                decided_at=v["decided_at"],
                recorded_at=v["at"],
            )
            for v in votes
            if v["decision_id"] in latest
        ],
        history=list(request.execution_history),
        current_stage=resolve_stage(request.current_stage, "current", catalog),
        upcoming_stages=[resolve_stage(stage, "upcoming", catalog) for stage in request.upcoming_stages],
        review_url=str(request.review_url) if request.review_url else None,
        custom_data=dict(request.custom_data),
        you=your_turn(stored, user),
    )
