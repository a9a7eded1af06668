"""A Slack channel in bot mode on a local Slack Web API: the request is posted once with buttons, every later event
of the gate updates that message in order, and Slack's refusals are permanent or retried as they deserve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from signoff import contracts as wire
from signoff.notifier.channels import DeliveryFailed, Outgoing, SlackBotTransport
from signoff.notifier.domain import Routing
from tests.integration.notifier.conftest import NotifierHarness, gate_opened
from tests.integration.notifier.test_notices import outcome
from tests.support.slack import SlackSink, assert_blocks_valid
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

TOKEN = "xoxb-notifier-test"
CHANNEL = "C0DOCS"


@pytest.fixture
async def slack_sink() -> AsyncIterator[SlackSink]:
    sink = SlackSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


def bot_routing(notifier: NotifierHarness, sink: SlackSink) -> Routing:
    (notifier.secrets / "slack-bot").write_text(TOKEN)
    channel = {
        "name": "docs-bot",
        "type": "slack",
        "settings": {"channel": CHANNEL, "api_url": sink.api_url},
        "secret_ref": "slack-bot",
    }
    return Routing.from_mapping({"channels": [channel], "routes": [{"groups": ["*"], "channels": ["docs-bot"]}]})


async def _now(value: Any) -> Any:
    return value


def vote_recorded(opened: wire.GateOpened, approver: str, comment: str) -> wire.VoteRecorded:
    at = "2025-03-04T10:20:00Z"
    vote = {"decision_id": f"d-{approver}", "source": "slack", "approver": approver, "status": "Approved"}
    return wire.VoteRecorded.model_validate(
        {
            "gate_id": opened.gate_id,
            "key": opened.key.model_dump(mode="json"),
            "vote": {**vote, "comment": comment, "decided_at": at},
            "approved_by": [approver],
            "recorded_at": at,
        }
    )


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("approved", "Approved by bob"),
        ("rejected", "Rejected by carol: &lt;b&gt;not&lt;/b&gt; today"),
        ("expired", "Expired: nobody decided in time"),
        ("cancelled", "Cancelled: execution aborted"),
    ],
)
async def test_votes_and_the_outcome_update_the_posted_message(
    notifier: NotifierHarness, slack_sink: SlackSink, kind: str, line: str
) -> None:
    await notifier.start(routing=bot_routing(notifier, slack_sink))
    opened = gate_opened()
    await notifier.publish(opened)
    posts = await eventually(lambda: _now(slack_sink.posts_for(opened.gate_id)), what="chat.postMessage")
    assert posts[0].authorization == f"Bearer {TOKEN}" and posts[0].body["channel"] == CHANNEL
    assert_blocks_valid(posts[0].body["blocks"])

    await notifier.publish(vote_recorded(opened, "dana", "looks good"))
    first = await eventually(lambda: _now(slack_sink.updates_for(opened.gate_id)), what="update after the vote")
    assert "Approved by dana: looks good" in json.dumps(first[0].body["blocks"])
    assert any(block["type"] == "actions" for block in first[0].body["blocks"])

    await notifier.publish(outcome(opened, kind))
    updates = await eventually(
        lambda: _now(len(slack_sink.updates_for(opened.gate_id)) >= 2 and slack_sink.updates_for(opened.gate_id)),
        what="update after the outcome",
    )
    final = updates[-1].body
    assert_blocks_valid(final["blocks"])
    assert (final["channel"], final["ts"]) == (CHANNEL, posts[0].answer["ts"])
    assert line in json.dumps(final["blocks"]) and all(b["type"] != "actions" for b in final["blocks"])
    assert len(slack_sink.posts_for(opened.gate_id)) == 1


def outgoing(delivery_id: int, gate_id: str, kind: str, text: str) -> Outgoing:
    body = json.dumps({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})
    return Outgoing(
        delivery_id=delivery_id,
        idempotency_key=f"k{delivery_id}",
        channel="docs-bot",
        recipient="docs-bot",
        attempt=1,
        content_type="application/json",
        subject=None,
        body=body,
        html=None,
        headers=(),
        gate_id=gate_id,
        kind=kind,
    )


async def test_the_transport_posts_once_waits_for_the_post_and_skips_an_older_update(
    notifier: NotifierHarness, slack_sink: SlackSink
) -> None:
    await notifier.start(routing=bot_routing(notifier, slack_sink))  # migrates the notifier schema
    transport = SlackBotTransport(
        notifier.pool, AsyncWebClient(token=TOKEN, base_url=slack_sink.api_url), "docs-bot", CHANNEL
    )
    gate = "gate-transport"

    with pytest.raises(DeliveryFailed) as early:
        await transport.send(outgoing(3, gate, "vote", "vote before the post"))
    assert not early.value.permanent  # retried until the request message exists

    await transport.send(outgoing(1, gate, "opened", "the request"))
    await transport.send(outgoing(1, gate, "opened", "the request"))  # a retry after a crash: not posted again
    assert len(slack_sink.of("/api/chat.postMessage")) == 1

    await transport.send(outgoing(7, gate, "approved", "approved"))
    await transport.send(outgoing(3, gate, "vote", "the vote, retried late"))  # older than what is shown
    updates = slack_sink.of("/api/chat.update")
    assert [call.body["text"] for call in updates] == ["approved"]


@pytest.mark.parametrize(("error", "permanent"), [("channel_not_found", True), ("ratelimited", False)])
async def test_slack_refusals_are_permanent_unless_they_can_pass(
    notifier: NotifierHarness, slack_sink: SlackSink, error: str, permanent: bool
) -> None:
    await notifier.start(routing=bot_routing(notifier, slack_sink))
    transport = SlackBotTransport(
        notifier.pool, AsyncWebClient(token=TOKEN, base_url=slack_sink.api_url), "docs-bot", CHANNEL
    )
    slack_sink.error = error
    with pytest.raises(DeliveryFailed) as failed:
        await transport.send(outgoing(1, "gate-refused", "opened", "the request"))
    assert failed.value.permanent is permanent and error in str(failed.value)
