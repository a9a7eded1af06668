"""The Slack bot mode's message of a gate: posted once (`chat.postMessage`) with Approve / Reject buttons, then
updated in place (`chat.update`) on every later event of the gate: the votes so far while it is pending, the
outcome line (who approved or rejected, with the comment) once it is closed, the buttons gone.

The buttons carry the gate and the action in their `value` (never the token): pressing one sends a `block_actions`
interaction to `signoff api` (`POST /slack/interactions`), which proves who pressed and opens signoff's modal.

Pure: the same view, votes and outcome give the same bytes (`to_json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from signoff.contracts.events import (
    DecisionStatus,
    GateApproved,
    GateCancelled,
    GateExpired,
    GateRejected,
    Vote,
)
from signoff.notifier.domain.render import SLACK_MAX_BLOCKS, SLACK_TEXT_LIMIT, render_slack, slack_escape
from signoff.notifier.domain.view import ApprovalView, mark_expressions

APPROVE_ACTION = "signoff_approve"
REJECT_ACTION = "signoff_reject"
"""`action_id`s of the buttons; the api's interactivity endpoint knows them."""

UPDATE_KINDS = frozenset({"vote", "approved", "rejected", "expired", "cancelled"})
"""Delivery kinds that update the posted message instead of posting a new one."""

Outcome = GateApproved | GateRejected | GateExpired | GateCancelled


def button_value(gate_id: str, action: str) -> str:
    """A button's `value`: the gate and the action (`approve` / `reject`), as compact JSON."""
    return json.dumps({"gate_id": gate_id, "action": action}, sort_keys=True, separators=(",", ":"))


def _vote_line(vote: Vote) -> str:
    verb = "Approved" if vote.status is DecisionStatus.APPROVED else "Rejected"
    comment = f": {mark_expressions(vote.comment)}" if vote.comment else ""
    return f"{verb} by {vote.approver}{comment}"


def vote_lines(votes: Sequence[Vote]) -> list[str]:
    """`Approved by dana: ship it` per current vote, in the order they were cast."""
    return [_vote_line(vote) for vote in votes]


def outcome_lines(outcome: Outcome) -> list[str]:
    """The outcome in words: who approved or rejected, with their comments; or why the gate closed."""
    if isinstance(outcome, GateApproved):
        if outcome.cause.value == "timeout_action":
            lines = ["Approved by the timeout action"]
        else:
            lines = vote_lines([vote for vote in outcome.votes if vote.status is DecisionStatus.APPROVED])
        return lines + [f"Input {name} = {value}" for name, value in sorted(outcome.inputs.items())]
    if isinstance(outcome, GateRejected):
        if outcome.cause.value == "approver":
            comment = f": {mark_expressions(outcome.comment)}" if outcome.comment else ""
            return [f"Rejected by {outcome.rejected_by}{comment}"]
        if outcome.cause.value == "superseded":
            return [f"Rejected: superseded by gate {outcome.superseded_by}"]
        return ["Rejected by the timeout action"]
    if isinstance(outcome, GateExpired):
        return ["Expired: nobody decided in time; the pipeline fails", *vote_lines(outcome.votes)]
    reason = f": {mark_expressions(outcome.reason)}" if outcome.reason else ""
    return [f"Cancelled{reason}"]


HEADLINES = {
    GateApproved: "Approved",
    GateRejected: "Rejected",
    GateExpired: "Expired",
    GateCancelled: "Cancelled",
}


def render_slack_bot(view: ApprovalView, status: Sequence[str] = (), *, buttons: bool = True) -> dict[str, Any]:
    """A `chat.postMessage` / `chat.update` payload (without `channel` / `ts`): the request as `render_slack`
    shows it (minus its link buttons), the `status` lines, and while `buttons`, Approve / Reject buttons that open
    signoff's modal."""
    payload = render_slack(view)
    blocks = [block for block in payload["blocks"] if block["type"] != "actions"]
    if status:
        text = "\n".join(slack_escape(line) for line in status)
        if len(text) > SLACK_TEXT_LIMIT:
            text = text[: SLACK_TEXT_LIMIT - 4].rsplit("\n", 1)[0] + "\n..."
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}})
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": "signoff_decide",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": label, "emoji": False},
                        "style": style,
                        "action_id": action_id,
                        "value": button_value(view.gate_id, action),
                    }
                    for label, style, action_id, action in (
                        ("Approve", "primary", APPROVE_ACTION, "approve"),
                        ("Reject", "danger", REJECT_ACTION, "reject"),
                    )
                ],
            }
        )
    if len(blocks) > SLACK_MAX_BLOCKS:  # keep the last blocks (status, buttons): the request is on the gate page
        keep = 2 if buttons and status else 1 if buttons or status else 0
        blocks = blocks[: SLACK_MAX_BLOCKS - keep] + (blocks[-keep:] if keep else [])
    text = payload["text"]
    if status:
        text = slack_escape(f"{status[0]} ({view.pipeline_name} / {view.stage_name})")
    return {"text": text, "blocks": blocks}


def render_update(view: ApprovalView, votes: Sequence[Vote], outcome: Outcome | None = None) -> dict[str, Any]:
    """The message after a later event: while pending, the request with its votes and the buttons; once closed,
    the request under the outcome's headline with the outcome lines and no buttons."""
    if outcome is None:
        return render_slack_bot(view, vote_lines(votes), buttons=True)
    # Closed: the headline says how, and "time left" no longer applies.
    closed = replace(view, headline=HEADLINES[type(outcome)], time_left="closed")
    return render_slack_bot(closed, outcome_lines(outcome), buttons=False)
