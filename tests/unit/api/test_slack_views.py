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


BUTTON = {"action_id": "signoff_approve", "value": json.dumps({"gate_id": "gate-1", "action": "approve"})}


def press(**parts: object) -> dict:
    """A `block_actions` payload of a press of signoff's Approve, with `parts` replacing (or adding) its own."""
    return {"type": "block_actions", "user": {"id": "U1"}, "trigger_id": "t1", "actions": [BUTTON], **parts}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (press(actions={"0": BUTTON}), "actions"),
        (press(actions="signoff_approve"), "actions"),
        (press(actions=7), "actions"),
        (press(actions=["signoff_approve"]), "actions[0]"),
        (press(actions=[[BUTTON]]), "actions[0]"),
        (press(actions=[{**BUTTON, "action_id": ["signoff_approve"]}]), "actions[0].action_id"),
        (press(actions=[{**BUTTON, "value": 7}]), "actions[0].value"),
        (press(actions=[{**BUTTON, "value": {"gate_id": "gate-1", "action": "approve"}}]), "actions[0].value"),
        (press(actions=[{**BUTTON, "value": "[" * 100_000}]), "actions[0].value"),
        (press(actions=[{**BUTTON, "value": json.dumps({"gate_id": "g", "action": ["approve"]})}]), "actions[0].value"),
        (press(actions=[{**BUTTON, "value": json.dumps(["gate-1", "approve"])}]), "actions[0].value"),
        (press(user="U1"), "user"),
        (press(user=["U1"]), "user"),
        (press(user={"id": 7}), "user.id"),
        (press(user={"id": {"id": "U1"}}), "user.id"),
        (press(trigger_id=7), "trigger_id"),
        (press(response_url={"url": "https://hooks.slack.com/x"}), "response_url"),
        ("not an object", "payload"),
    ],
)
def test_a_press_of_the_wrong_shape_is_refused_naming_the_part(payload: object, field: str) -> None:
    with pytest.raises(views.BadInteraction) as refused:
        views.read_click(payload)  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"{field}: "), str(refused.value)


def test_a_press_without_a_user_is_an_unknown_one() -> None:
    read = views.read_click({"type": "block_actions", "actions": [BUTTON]})
    assert (read.slack_user, read.gate_id, read.trigger_id, read.response_url) == ("", "gate-1", "", None)


METADATA = json.dumps({"gate_id": "gate-1", "action": "approve", "response_url": None})


def submitted(view: object = None, **parts: object) -> dict:
    """A `view_submission` payload of signoff's modal, `view`'s parts replacing (or adding) the modal's own."""
    modal = {"id": "V1", "callback_id": views.CALLBACK_ID, "private_metadata": METADATA, "state": {"values": {}}}
    shown = {**modal, **view} if isinstance(view, dict) else modal if view is None else view
    return {"type": "view_submission", "user": {"id": "U1"}, "view": shown, **parts}


def values(blocks: dict) -> dict:
    """A view's parts with `blocks` as its state's values."""
    return {"state": {"values": blocks}}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (submitted("V1"), "view"),
        (submitted([{"id": "V1"}]), "view"),
        (submitted({"callback_id": ["signoff_decision"]}), "view.callback_id"),
        (submitted({"private_metadata": 7}), "view.private_metadata"),
        (submitted({"private_metadata": {"gate_id": "gate-1", "action": "approve"}}), "view.private_metadata"),
        (submitted({"private_metadata": "not json"}), "view.private_metadata"),
        (submitted({"private_metadata": "[" * 100_000}), "view.private_metadata"),
        (submitted({"private_metadata": json.dumps(["gate-1", "approve"])}), "view.private_metadata"),
        (submitted({"private_metadata": json.dumps({"gate_id": 7, "action": "approve"})}), "view.private_metadata"),
        (
            submitted({"private_metadata": json.dumps({"gate_id": "gate-1", "action": {"approve": True}})}),
            "view.private_metadata",
        ),
        (
            submitted({"private_metadata": json.dumps({"gate_id": "g", "action": "approve", "response_url": 7})}),
            "view.private_metadata.response_url",
        ),
        (submitted({"id": 7}), "view.id"),
        (submitted({"id": ""}), "view.id"),
        (submitted({"state": "values"}), "view.state"),
        (submitted({"state": {"values": [["comment", "ok"]]}}), "view.state.values"),
        (submitted({"state": {"values": "comment"}}), "view.state.values"),
        (submitted(values({"comment": "ok"})), "view.state.values.comment"),
        (submitted(values({"comment": {"value": "ok"}})), "view.state.values.comment.value"),
        (
            submitted(values({"comment": {"value": {"type": "plain_text_input", "value": 7}}})),
            "view.state.values.comment.value.value",
        ),
        (
            submitted(values({"comment": {"value": {"type": "plain_text_input", "value": {"text": "ok"}}}})),
            "view.state.values.comment.value.value",
        ),
        (submitted(values({"input:ticket": ["CHG-1"]})), "view.state.values.input:ticket"),
        (
            submitted(values({"input:ticket": {"value": {"type": "static_select", "selected_option": "CHG-1"}}})),
            "view.state.values.input:ticket.value.selected_option",
        ),
        (
            submitted(values({"input:ticket": {"value": {"type": "static_select", "selected_option": {"value": 1}}}})),
            "view.state.values.input:ticket.value.selected_option.value",
        ),
        (submitted(user="U1"), "user"),
        (submitted(user={"id": 7}), "user.id"),
        ([{"type": "view_submission"}], "payload"),
    ],
)
def test_a_submission_of_the_wrong_shape_is_refused_naming_the_part(payload: object, field: str) -> None:
    with pytest.raises(views.BadInteraction) as refused:
        views.read_submission(payload)  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"{field}: "), str(refused.value)


def test_absent_or_null_parts_of_a_submission_are_empty() -> None:
    read = views.read_submission(
        submitted(
            values(
                {"comment": None, "input:note": {"value": None}, "input:ticket": {"value": {"type": "static_select"}}}
            )
        )
    )
    assert (read.comment, read.inputs, read.response_url) == ("", {"note": "", "ticket": ""}, None)
    assert views.read_submission(submitted({"state": None})).inputs == {}


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
