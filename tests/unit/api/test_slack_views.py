"""What the api shows in Slack and reads back: the decision modal (valid per slack_sdk's View model), the
submission's field errors, refusals in words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from signoff.api import slack_views as views
from signoff.contracts.events import ApproverInput
from tests.support.slack import assert_view_valid

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
INPUTS = [
    ApproverInput(name="ticket", required=True, allowedValues=["CHG-1", "CHG-2"]),
    ApproverInput(name="note", defaultValue="none"),
    ApproverInput(name="region", defaultValue="eu", required=True),
]


def click(action: str = "approve") -> views.Click:
    return views.Click("U1", "gate-1", action, "trigger-1", "https://hooks.slack.com/actions/T/1/x")


def submission(action: str = "approve", comment: str = "", **inputs: str) -> views.Submission:
    return views.Submission("U1", "V1", "gate-1", action, None, comment, dict(inputs))


def test_the_approve_modal_has_the_comment_and_a_field_per_input() -> None:
    modal = views.decision_modal(
        click(), pipeline="Payments <!here>", stage="Deploy", step="Approve", message="ship *it*", inputs=INPUTS
    )
    assert_view_valid(modal)
    blocks = {block.get("block_id"): block for block in modal["blocks"]}
    assert blocks["input:ticket"]["element"]["type"] == "static_select"
    assert blocks["input:ticket"]["optional"] is False and "initial_option" not in blocks["input:ticket"]["element"]
    assert blocks["input:note"]["element"]["initial_value"] == "none"
    assert blocks["input:region"]["optional"] is False
    assert "<!here>" not in json.dumps(modal)
    assert json.loads(modal["private_metadata"])["gate_id"] == "gate-1"


def test_the_reject_modal_asks_only_for_a_comment() -> None:
    modal = views.decision_modal(click("reject"), pipeline="P", stage="S", step="A", message="", inputs=INPUTS)
    assert_view_valid(modal)
    assert [b.get("block_id") for b in modal["blocks"] if b["type"] == "input"] == ["comment"]


@pytest.mark.parametrize(
    ("sent", "errors"),
    [
        (submission(ticket="CHG-1"), {}),
        (submission(ticket=""), {"input:ticket": "Required: the approval needs a value."}),
        (submission(), {"input:ticket": "Required: the approval needs a value."}),
        (submission(ticket="CHG-9"), {"input:ticket": "Choose one of: CHG-1, CHG-2"}),
        (submission(ticket="CHG-1", region=""), {}),  # its default fills it
        (submission(ticket="CHG-1", other="x"), {"input:other": "This gate has no such input."}),
        (submission("reject"), {}),
        (submission("reject", comment="x" * 3001), {"comment": "At most 3000 characters."}),
    ],
)
def test_submission_errors_are_by_field(sent: views.Submission, errors: dict) -> None:
    assert views.submission_errors(sent, INPUTS) == errors


def test_a_submission_is_read_from_slacks_state_values() -> None:
    modal = views.decision_modal(click(), pipeline="P", stage="S", step="A", message="", inputs=INPUTS)
    payload = {
        "type": "view_submission",
        "user": {"id": "U1"},
        "view": {
            "id": "V9",
            "callback_id": modal["callback_id"],
            "private_metadata": modal["private_metadata"],
            "state": {
                "values": {
                    "comment": {"value": {"type": "plain_text_input", "value": "ok"}},
                    "input:ticket": {"value": {"type": "static_select", "selected_option": {"value": "CHG-2"}}},
                    "input:note": {"value": {"type": "plain_text_input", "value": None}},
                }
            },
        },
    }
    read = views.read_submission(payload)
    assert (read.gate_id, read.action, read.view_id, read.comment) == ("gate-1", "approve", "V9", "ok")
    assert read.inputs == {"ticket": "CHG-2", "note": ""}
    assert read.response_url == "https://hooks.slack.com/actions/T/1/x"


@pytest.mark.parametrize(
    "actions",
    [
        [],
        [{"action_id": "other", "value": "{}"}],
        [{"action_id": "signoff_approve", "value": "not json"}],
        [{"action_id": "signoff_approve", "value": json.dumps({"gate_id": "g", "action": "delete"})}],
    ],
)
def test_a_press_that_is_not_signoffs_is_refused(actions: list) -> None:
    with pytest.raises(views.BadInteraction):
        views.read_click({"type": "block_actions", "user": {"id": "U1"}, "actions": actions})


def test_a_closed_gate_is_said_with_who_and_when() -> None:
    assert views.closed_words("approved", NOW - timedelta(minutes=3), ["dana"], NOW) == (
        "gate is approved by dana 3 min ago"
    )
    assert views.closed_words("expired", NOW - timedelta(hours=5), [], NOW) == "gate is expired 5 h ago"
    assert views.closed_words("rejected", NOW, ["bob"], NOW) == "gate is rejected by bob just now"


def test_refusals_name_the_reason_code_and_say_it_in_words() -> None:
    assert views.refusal_text("not_eligible", "x") == (
        "Refused (not_eligible): you are not an eligible approver of this gate"
    )
    assert views.refusal_text("stale_token", "the gate's token changed") == (
        "Refused (stale_token): the gate's token changed"
    )
    message = views.ephemeral(views.unknown_user_text("U0NOBODY"))
    assert message["response_type"] == "ephemeral" and "U0NOBODY" in message["text"]
