"""The Slack bot mode's message: the request with Approve / Reject buttons naming the gate (never the token), then
the votes so far, then the outcome line with the buttons gone; every payload valid Block Kit."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from signoff.contracts.events import (
    ApprovalCause,
    DecisionStatus,
    GateApproved,
    GateCancelled,
    GateExpired,
    GateRejected,
    RejectionCause,
    Vote,
)
from signoff.notifier.domain import ApprovalView
from signoff.notifier.domain.slack import (
    APPROVE_ACTION,
    REJECT_ACTION,
    outcome_lines,
    render_slack_bot,
    render_update,
)
from tests.support.slack import assert_blocks_valid

from .builders import NOW, PAGE, catalog, hard_views, opened


def view() -> ApprovalView:
    return ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)


def vote(approver: str, status: DecisionStatus = DecisionStatus.APPROVED, comment: str = "") -> Vote:
    return Vote(
        decision_id=f"d-{approver}", source="slack", approver=approver, status=status, comment=comment, decided_at=NOW
    )


def gate_fields() -> dict:
    data = opened()
    return {"gate_id": data.gate_id, "key": data.key}


def actions(payload: dict) -> list[dict]:
    return [block for block in payload["blocks"] if block["type"] == "actions"]


def test_the_request_has_buttons_naming_the_gate_and_the_action_not_the_token() -> None:
    payload = render_slack_bot(view())
    assert_blocks_valid(payload["blocks"])
    (buttons,) = actions(payload)
    assert [(b["action_id"], json.loads(b["value"])) for b in buttons["elements"]] == [
        (APPROVE_ACTION, {"gate_id": opened().gate_id, "action": "approve"}),
        (REJECT_ACTION, {"gate_id": opened().gate_id, "action": "reject"}),
    ]
    assert opened().token not in json.dumps(payload)
    assert all("url" not in b for b in buttons["elements"])  # a URL button would open a page, not the modal


REQUESTS = [index for index, candidate in enumerate(hard_views()) if isinstance(candidate, ApprovalView)]


@pytest.mark.parametrize("index", REQUESTS)
def test_every_hard_request_renders_valid_block_kit_in_bot_mode(index: int) -> None:
    candidate = hard_views()[index]
    assert isinstance(candidate, ApprovalView)
    for payload in (render_slack_bot(candidate), render_update(candidate, [vote("dana", comment="<!channel> *x*")])):
        assert_blocks_valid(payload["blocks"])
        assert len(payload["blocks"]) <= 50 and actions(payload)


def test_a_vote_keeps_the_buttons_and_lists_the_votes_escaped() -> None:
    payload = render_update(view(), [vote("dana", comment="<!channel> ship"), vote("bob", DecisionStatus.REJECTED)])
    assert_blocks_valid(payload["blocks"])
    shown = json.dumps(payload["blocks"])
    assert "Approved by dana: &lt;!channel&gt; ship" in shown and "Rejected by bob" in shown
    assert "<!channel>" not in shown
    assert actions(payload)


def test_the_outcome_replaces_the_buttons_with_who_decided() -> None:
    approved = GateApproved(
        **gate_fields(),
        cause=ApprovalCause.APPROVERS,
        votes=[vote("dana", comment="ship it")],
        inputs={"ticket": "CHG-2"},
        approved_at=NOW,
    )
    payload = render_update(view(), [], approved)
    assert_blocks_valid(payload["blocks"])
    assert actions(payload) == []
    shown = json.dumps(payload["blocks"])
    assert "Approved by dana: ship it" in shown and "Input ticket = CHG-2" in shown
    assert payload["blocks"][0]["text"]["text"].startswith("Approved:")
    assert payload["text"].startswith("Approved by dana")


@pytest.mark.parametrize(
    ("outcome", "line"),
    [
        (
            lambda f: GateRejected(
                **f, cause=RejectionCause.APPROVER, rejected_by="bob", comment="not today", rejected_at=NOW
            ),
            "Rejected by bob: not today",
        ),
        (lambda f: GateExpired(**f, expired_at=NOW + timedelta(days=1)), "Expired: nobody decided in time"),
        (lambda f: GateCancelled(**f, reason="execution aborted", cancelled_at=NOW), "Cancelled: execution aborted"),
        (
            lambda f: GateApproved(**f, cause=ApprovalCause.TIMEOUT_ACTION, approved_at=NOW),
            "Approved by the timeout action",
        ),
    ],
)
def test_every_outcome_is_said_in_words(outcome, line: str) -> None:
    event = outcome(gate_fields())
    assert outcome_lines(event)[0].startswith(line)
    payload = render_update(view(), [], event)
    assert_blocks_valid(payload["blocks"])
    assert actions(payload) == []
