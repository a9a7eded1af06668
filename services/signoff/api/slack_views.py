"""What the api shows in Slack, and how it reads what Slack sends back: the decision modal (`views.open`), the
ephemeral answers to the person who pressed a button, and the modal's submitted values. Pure: no I/O, no clock.

Every text that comes from a pipeline or a person is escaped for Slack (`slack_escape`): a gate's message cannot
mention `@channel` or hide a link in the modal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from signoff.contracts.events import ApproverInput, DecisionStatus, RefusalReason
from signoff.notifier.domain.render import slack_escape
from signoff.notifier.domain.slack import APPROVE_ACTION, REJECT_ACTION

CALLBACK_ID = "signoff_decision"
COMMENT_BLOCK = "comment"
INPUT_BLOCK_PREFIX = "input:"
VALUE_ACTION = "value"
COMMENT_LIMIT = 3000  # Slack's plain_text_input max_length; the decision allows more, the modal cannot send it
OPTION_TEXT_LIMIT = 75
OPTION_VALUE_LIMIT = 150
OPTIONS_LIMIT = 100

ACTIONS = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}
STATUS = {"approve": DecisionStatus.APPROVED, "reject": DecisionStatus.REJECTED}


class BadInteraction(ValueError):
    """A payload signoff did not send the parts of (unknown action, a value that names no gate), or with a part of
    the wrong shape (a string where Slack sends an object, ...); its message names the part."""


@dataclass(frozen=True)
class Click:
    """A press of Approve / Reject on a gate's message."""

    slack_user: str
    gate_id: str
    action: str  # approve | reject
    trigger_id: str
    response_url: str | None


@dataclass(frozen=True)
class Submission:
    """A submitted decision modal."""

    slack_user: str
    view_id: str
    gate_id: str
    action: str
    response_url: str | None
    comment: str
    inputs: dict[str, str]


def _plain(text: str, limit: int) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text, "emoji": False}


def read_click(payload: Mapping[str, Any]) -> Click:
    """The button press of a `block_actions` payload; BadInteraction when it is not one of signoff's buttons."""
    payload = _object(payload, "payload")
    actions = payload.get("actions")
    if actions is not None and not isinstance(actions, list):
        raise BadInteraction("actions: not a list")
    action = _object(actions[0], "actions[0]") if actions else {}
    action_id = action.get("action_id")
    if not isinstance(action_id, str) or action_id not in ACTIONS:
        raise BadInteraction(f"actions[0].action_id: unknown action_id {_shown(action_id)}")
    value = _json(action.get("value"), "actions[0].value", "the button's value is not signoff's")
    if not isinstance(value, dict) or not isinstance(value.get("gate_id"), str) or not _known(value.get("action")):
        raise BadInteraction("actions[0].value: the button's value names no gate")
    return Click(
        slack_user=_slack_user(payload),
        gate_id=value["gate_id"],
        action=value["action"],
        trigger_id=_text(payload.get("trigger_id"), "trigger_id"),
        response_url=_text(payload.get("response_url"), "response_url") or None,
    )


def decision_modal(
    click: Click, *, pipeline: str, stage: str, step: str, message: str, inputs: Sequence[ApproverInput]
) -> dict[str, Any]:
    """The modal a press opens: the gate in words, a comment and (to approve) one field per approver input, its
    default filled, allowed values as a static select, required ones not optional."""
    verb = "Approve" if click.action == "approve" else "Reject"
    summary = f"*{slack_escape(verb)}* {slack_escape(pipeline)} / {slack_escape(stage)} / {slack_escape(step)}"
    if message:
        summary += "\n" + slack_escape(message[:2000])
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": summary[:3000], "verbatim": True}},
        {
            "type": "input",
            "block_id": COMMENT_BLOCK,
            "optional": True,
            "label": _plain("Comment", 2000),
            "element": {
                "type": "plain_text_input",
                "action_id": VALUE_ACTION,
                "multiline": True,
                "max_length": COMMENT_LIMIT,
            },
        },
    ]
    if click.action == "approve":
        blocks += [_input_block(item) for item in inputs]
    metadata = {"gate_id": click.gate_id, "action": click.action, "response_url": click.response_url}
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "title": _plain(f"{verb} gate", 24),
        "submit": _plain(verb, 24),
        "close": _plain("Cancel", 24),
        "blocks": blocks,
    }


def _input_block(item: ApproverInput) -> dict[str, Any]:
    label = item.name + (" (required)" if item.required else "")
    selectable = (
        item.allowed_values
        and len(item.allowed_values) <= OPTIONS_LIMIT
        and all(len(value) <= OPTION_VALUE_LIMIT for value in item.allowed_values)
    )
    element: dict[str, Any]
    if selectable:
        options = [
            {"text": _plain(value or "(empty)", OPTION_TEXT_LIMIT), "value": value} for value in item.allowed_values
        ]
        element = {"type": "static_select", "action_id": VALUE_ACTION, "options": options}
        default = next((option for option in options if option["value"] == item.default_value), None)
        if default is not None:
            element["initial_option"] = default
    else:
        element = {"type": "plain_text_input", "action_id": VALUE_ACTION}
        if item.default_value:
            element["initial_value"] = item.default_value[:3000]
    block: dict[str, Any] = {
        "type": "input",
        "block_id": INPUT_BLOCK_PREFIX + item.name,
        "optional": not item.required,
        "label": _plain(label, 2000),
        "element": element,
    }
    if item.allowed_values and not selectable:
        block["hint"] = _plain("One of: " + ", ".join(item.allowed_values), 2000)
    return block


def read_submission(payload: Mapping[str, Any]) -> Submission:
    """The values of a submitted decision modal; BadInteraction when it is not signoff's modal."""
    payload = _object(payload, "payload")
    view = _object(payload.get("view"), "view")
    if view.get("callback_id") != CALLBACK_ID:
        raise BadInteraction(f"view.callback_id: unknown view callback_id {_shown(view.get('callback_id'))}")
    metadata = _json(view.get("private_metadata"), "view.private_metadata", "not signoff's")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("gate_id"), str):
        raise BadInteraction("view.private_metadata: the view names no gate")
    if not _known(metadata.get("action")):
        raise BadInteraction("view.private_metadata: the view names no action")
    view_id = _text(view.get("id"), "view.id")
    if not view_id:
        raise BadInteraction("view.id: the view has no id")
    values = _object(_object(view.get("state"), "view.state").get("values"), "view.state.values")
    comment = _value(values.get(COMMENT_BLOCK), f"view.state.values.{COMMENT_BLOCK}")
    inputs = {
        block.removeprefix(INPUT_BLOCK_PREFIX): _value(fields, f"view.state.values.{block}")
        for block, fields in values.items()
        if isinstance(block, str) and block.startswith(INPUT_BLOCK_PREFIX)
    }
    return Submission(
        slack_user=_slack_user(payload),
        view_id=view_id,
        gate_id=metadata["gate_id"],
        action=metadata["action"],
        response_url=_text(metadata.get("response_url"), "view.private_metadata.response_url") or None,
        comment=comment,
        inputs=inputs,
    )


def _value(fields: Any, where: str) -> str:
    """The value of one input block (`{"value": {"type": ..., "value" | "selected_option": ...}}`); absent is ''."""
    field = _object(_object(fields, where).get(VALUE_ACTION), f"{where}.{VALUE_ACTION}")
    if field.get("type") == "static_select":
        option = _object(field.get("selected_option"), f"{where}.{VALUE_ACTION}.selected_option")
        return _text(option.get("value"), f"{where}.{VALUE_ACTION}.selected_option.value")
    return _text(field.get("value"), f"{where}.{VALUE_ACTION}.value")


# ---------------------------------------------------------------------------------------------- payload parts
# Slack's payloads are JSON: each part is checked for its type here, so a part of the wrong shape is a
# BadInteraction naming it (422), never a TypeError / AttributeError (500). An absent part (or JSON null) is empty.


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadInteraction(f"{where}: not an object")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInteraction(f"{where}: not a string")
    return value


def _json(value: Any, where: str, words: str) -> Any:
    """`value` (a string of JSON) parsed; BadInteraction when it is not a string or not JSON."""
    text = _text(value, where)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadInteraction(f"{where}: {words}") from None


def _known(action: Any) -> bool:
    return isinstance(action, str) and action in STATUS


def _slack_user(payload: Mapping[str, Any]) -> str:
    """The id of the Slack user who pressed or submitted ('' when Slack sent none: an unknown user)."""
    return _text(_object(payload.get("user"), "user").get("id"), "user.id")


def _shown(value: Any) -> str:
    """A value of the payload in a message: its repr, cut short."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:79] + "…"


def submission_errors(submission: Submission, inputs: Sequence[ApproverInput]) -> dict[str, str]:
    """Errors by block id (`response_action: errors`), empty when the submission can be decided: a required input
    without a value (and no default), a value outside the allowed ones, a field the gate does not have."""
    errors: dict[str, str] = {}
    if len(submission.comment) > COMMENT_LIMIT:
        errors[COMMENT_BLOCK] = f"At most {COMMENT_LIMIT} characters."
    if submission.action != "approve":
        return errors
    known = {item.name: item for item in inputs}
    for name, value in submission.inputs.items():
        item = known.get(name)
        block = INPUT_BLOCK_PREFIX + name
        if item is None:
            errors[block] = "This gate has no such input."
        elif item.required and not value.strip() and not item.default_value:
            errors[block] = "Required: the approval needs a value."
        elif value and item.allowed_values and value not in item.allowed_values:
            errors[block] = "Choose one of: " + ", ".join(item.allowed_values)[:200]
    for item in inputs:
        if item.required and not item.default_value and item.name not in submission.inputs:
            errors[INPUT_BLOCK_PREFIX + item.name] = "Required: the approval needs a value."
    return errors


def ago(then: datetime, now: datetime) -> str:
    """`just now`, `3 min ago`, `2 h ago`, `4 days ago`."""
    span = max(now - then, timedelta(0))
    minutes = int(span.total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 120:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // (24 * 60)} days ago"


def closed_words(status: str, closed_at: datetime | None, deciders: Sequence[str], now: datetime) -> str:
    """`gate is approved by dana 3 min ago` (who: the approvers, or the rejecting one)."""
    when = f" {ago(closed_at, now)}" if closed_at is not None else ""
    if status in ("approved", "rejected") and deciders:
        return f"gate is {status} by {', '.join(deciders)}{when}"
    return f"gate is {status}{when}"


REFUSAL_WORDS = {
    RefusalReason.NOT_ELIGIBLE.value: "you are not an eligible approver of this gate",
    RefusalReason.SELF_APPROVAL.value: "you triggered this run, and its policy does not let its executor approve it",
}


def refusal_text(code: str, detail: str) -> str:
    """An ephemeral refusal: the reason code and the reason in words."""
    return f"Refused ({code}): {REFUSAL_WORDS.get(code, detail)}"


def unknown_user_text(slack_user: str) -> str:
    return (
        f"Refused (unknown_user): you are not in signoff's directory (Slack user {slack_user}); "
        f"ask an operator to add slack: {slack_user} to your directory entry."
    )


def ephemeral(text: str) -> dict[str, Any]:
    """A `response_url` message only the person who pressed sees; the original message stays."""
    return {"response_type": "ephemeral", "replace_original": False, "text": slack_escape(text)}
