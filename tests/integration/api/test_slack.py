"""Approving from Slack, driven as Slack drives it: the notifier (bot mode) posts the request with buttons to a
local Slack Web API, the test presses them with signed `block_actions` / `view_submission` payloads sent to the
api role's real endpoint, and the approval role judges. Approval, api and notifier roles run on the real broker
and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from signoff import contracts as wire
from signoff.api.repository import SCHEMA as API_SCHEMA
from signoff.notifier.domain import Routing
from signoff.notifier.service import notifier_spec
from signoff.notifier.settings import NotifierSettings
from signoff.runtime.service import Service
from tests.integration.api.conftest import FrontDoor, pipeline_name, running_front_door
from tests.integration.approval.conftest import request
from tests.support import slack
from tests.support.slack import SlackSink
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SIGNING_SECRET = "slack-signing-secret-for-tests"
BOT_TOKEN = "xoxb-test-bot-token"
CHANNEL = "C0RELEASES"
DANA, ELI, BOB, STRANGER = "UDANA0001", "UELI00001", "UBOB00001", "UNOBODY01"


class SlackWorld:
    """The roles, the Slack sink and helpers to press buttons and submit modals as a Slack user."""

    def __init__(self, door: FrontDoor, sink: SlackSink) -> None:
        self.door, self.sink = door, sink

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.door.url, timeout=30) as client:
            return await client.post("/slack/interactions", content=body, headers=headers)

    async def send(self, payload: dict) -> httpx.Response:
        return await self.post(*slack.signed(SIGNING_SECRET, payload))

    async def posted(self, gate_id: str) -> dict:
        """The request message the notifier posted for the gate (with its `ts`), validated."""
        calls = await eventually(lambda: _async(self.sink.posts_for(gate_id)), what=f"chat.postMessage of {gate_id}")
        assert len(calls) == 1
        call = calls[0]
        assert call.authorization == f"Bearer {BOT_TOKEN}"
        assert call.body["channel"] == CHANNEL
        slack.assert_blocks_valid(call.body["blocks"])
        return call.body

    async def press(self, gate_id: str, action: str, slack_id: str, name: str) -> tuple[httpx.Response, str]:
        """Press a button of the gate's message; returns the answer and the press's response_url."""
        posted = await self.posted(gate_id)
        response_url = self.sink.response_url()
        payload = slack.block_actions(posted, "1700000001.000100", action, slack_id, name, response_url)
        return await self.send(payload), response_url

    async def modal(self, count: int) -> dict:
        """The `count`-th modal opened (views.open), validated."""
        calls = await eventually(
            lambda: _async(len(self.sink.of("/api/views.open")) >= count and self.sink.of("/api/views.open")),
            what=f"{count} views.open",
        )
        call = calls[count - 1]
        assert call.authorization == f"Bearer {BOT_TOKEN}" and call.body["trigger_id"]
        view = call.body["view"]
        slack.assert_view_valid(view)
        return view

    async def ephemeral(self, response_url: str) -> str:
        calls = await eventually(
            lambda: _async([c for c in self.sink.responses() if c.path == response_url.removeprefix(self.sink.url)]),
            what=f"a message to {response_url}",
        )
        slack.assert_message_valid(calls[0].body)
        return calls[0].body["text"]

    async def audit(self, gate_id: str) -> list[dict]:
        async with await self.door.client("eli") as eli:
            return (await eli.get(f"/gates/{gate_id}/audit")).json()["entries"]

    async def interactions_recorded(self) -> int:
        async with self.door.pool.acquire() as conn:
            return await conn.fetchval(f'SELECT count(*) FROM "{API_SCHEMA}".slack_interactions')  # noqa: S608


async def _async(value):
    return value


@contextlib.asynccontextmanager
async def slack_world(settings, names, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    sink = SlackSink()
    await sink.start()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack-bot-token").write_text(BOT_TOKEN + "\n")
    routing = Routing.from_mapping(
        {
            "channels": [
                {
                    "name": "releases",
                    "type": "slack",
                    "settings": {"channel": CHANNEL, "api_url": sink.api_url},
                    "secret_ref": "slack-bot-token",
                }
            ],
            "routes": [{"groups": ["*"], "channels": ["releases"]}],
        }
    )
    notifier_settings = NotifierSettings(
        **{
            **settings.model_dump(),
            "channel_secrets_dir": secrets,
            "delivery_backoff_base_seconds": 0.05,
            "delivery_backoff_cap_seconds": 0.5,
            "dispatch_interval_seconds": 0.2,
        }
    )
    spec = notifier_spec(notifier_settings, routing=routing, group_id=names.group("notifier"))
    notifier = Service(spec, notifier_settings)
    try:
        async with running_front_door(
            settings,
            names,
            tmp_path,
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token=BOT_TOKEN,
            slack_decision_key="slack-decision-key-for-tests",
            slack_api_url=sink.api_url,
        ) as door:
            await notifier.start()
            try:
                yield SlackWorld(door, sink)
            finally:
                await notifier.stop()
    finally:
        await sink.stop()


@pytest.fixture
async def world(settings, names, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world(settings, names, tmp_path) as world:
        yield world


def gate_request(**kwargs) -> wire.ApprovalRequested:
    req = request(pipeline=pipeline_name(), timeout="1d", **kwargs)
    return req.model_copy(
        update={
            "approver_inputs": [
                wire.ApproverInput(name="ticket", required=True, allowedValues=["CHG-1", "CHG-2"]),
                wire.ApproverInput(name="note", defaultValue="none"),
            ]
        }
    )


async def test_dana_approves_from_slack_and_the_message_says_so(world: SlackWorld) -> None:
    gate_id, _ = await world.door.open_gate(gate_request(groups=("docs",)))
    posted = await world.posted(gate_id)
    buttons = next(block for block in posted["blocks"] if block["type"] == "actions")["elements"]
    assert [(b["text"]["text"], json.loads(b["value"])) for b in buttons] == [
        ("Approve", {"gate_id": gate_id, "action": "approve"}),
        ("Reject", {"gate_id": gate_id, "action": "reject"}),
    ]
    assert "token" not in json.dumps(buttons)

    # bob is in the directory but not in the gate's groups: refused in words, nothing opened.
    answer, bob_url = await world.press(gate_id, "signoff_approve", BOB, "bob")
    assert (answer.status_code, answer.text) == (200, "")
    assert (await world.ephemeral(bob_url)).startswith("Refused (not_eligible): you are not an eligible approver")

    # Somebody Slack knows and signoff does not: refused, and the gate's audit trail names the Slack id.
    _, stranger_url = await world.press(gate_id, "signoff_approve", STRANGER, "mallory")
    assert "not in signoff's directory" in await world.ephemeral(stranger_url)
    denials = [entry for entry in await world.audit(gate_id) if entry["kind"] == "denied"]
    assert any(f"slack:{STRANGER}" in json.dumps(entry) for entry in denials), denials

    answer, dana_url = await world.press(gate_id, "signoff_approve", DANA, "dana")
    assert (answer.status_code, answer.text) == (200, "")  # acknowledged; the modal opens in the background
    view = await world.modal(1)
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert blocks["input:ticket"]["optional"] is False
    assert [o["value"] for o in blocks["input:ticket"]["element"]["options"]] == ["CHG-1", "CHG-2"]
    assert blocks["input:note"]["element"]["initial_value"] == "none" and blocks["input:note"]["optional"] is True

    # A required input left empty, then a value outside the allowed ones: the modal shows the error by the field.
    empty = slack.view_submission(
        view, {"comment": slack.text_value(""), "input:ticket": slack.select_value(None)}, DANA, "dana", "VDANA1"
    )
    answer = await world.send(empty)
    assert answer.status_code == 200
    assert answer.json() == {
        "response_action": "errors",
        "errors": {"input:ticket": "Required: the approval needs a value."},
    }
    outside = slack.view_submission(view, {"input:ticket": slack.select_value("CHG-9")}, DANA, "dana", "VDANA1")
    assert list((await world.send(outside)).json()["errors"]) == ["input:ticket"]

    values = {
        "comment": slack.text_value("ship it"),
        "input:ticket": slack.select_value("CHG-2"),
        "input:note": slack.text_value("none"),
    }
    answer = await world.send(slack.view_submission(view, values, DANA, "dana", "VDANA1"))
    assert (answer.status_code, answer.text) == (200, "")

    async def approved():
        async with await world.door.client("dana") as client:
            gate = (await client.get(f"/gates/{gate_id}")).json()
        return gate if gate["status"] == "approved" else None

    await eventually(approved, what="the gate approved")
    votes = [entry for entry in await world.audit(gate_id) if entry["kind"] == "vote"]
    assert [(v["actor"], v["source"]) for v in votes] == [("dana", "slack")]

    def closed_updates():
        return [
            call
            for call in world.sink.updates_for(gate_id)
            if all(block["type"] != "actions" for block in call.body["blocks"])
        ]

    updates = await eventually(lambda: _async(closed_updates()), what="chat.update with the outcome")
    update = updates[-1].body
    assert (update["channel"], update["ts"]) == (CHANNEL, posted_ts(world, gate_id))
    slack.assert_blocks_valid(update["blocks"])
    assert all(block["type"] != "actions" for block in update["blocks"])
    shown = json.dumps(update["blocks"])
    assert "Approved by dana: ship it" in shown and "Input ticket = CHG-2" in shown

    # dana's press and submission were answered by the modal and the update: nothing ephemeral was sent to her.
    assert [c for c in world.sink.responses() if dana_url.endswith(c.path)] == []

    # The gate is closed: a later press is told so, in words.
    _, eli_url = await world.press(gate_id, "signoff_approve", ELI, "eli")
    assert (await world.ephemeral(eli_url)).startswith("Refused (gate_closed): gate is approved by dana just now")
    assert len(world.sink.of("/api/views.open")) == 1


def posted_ts(world: SlackWorld, gate_id: str) -> str:
    return world.sink.posts_for(gate_id)[0].answer["ts"]


async def test_forged_missing_or_stale_signatures_are_401_and_change_nothing(world: SlackWorld) -> None:
    gate_id, _ = await world.door.open_gate(gate_request(groups=("docs",)))
    posted = await world.posted(gate_id)
    payload = slack.block_actions(posted, "1.0", "signoff_approve", DANA, "dana", world.sink.response_url())
    body, headers = slack.signed(SIGNING_SECRET, payload)
    before = await world.interactions_recorded()

    forged = {**headers, "X-Slack-Signature": slack.sign("not-the-secret", body)["X-Slack-Signature"]}
    unsigned = {k: v for k, v in headers.items() if k != "X-Slack-Signature"}
    stale_body, stale = slack.signed(SIGNING_SECRET, payload, at=time.time() - 6 * 60)
    tampered = body.replace(b"UDANA0001", b"UELI00001")
    for content, sent in ((body, forged), (body, unsigned), (stale_body, stale), (tampered, headers)):
        answer = await world.post(content, sent)
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_signature"

    # A correctly signed request of the same moment goes through: the 401s were the signatures' doing.
    assert (await world.post(body, headers)).status_code == 200
    await world.modal(1)
    assert await world.interactions_recorded() == before + 1
    assert [e for e in await world.audit(gate_id) if e["kind"] in ("vote", "denied")] == []


async def test_a_timestamp_that_is_not_a_number_is_401_like_a_bad_signature(world: SlackWorld) -> None:
    body, headers = slack.signed(SIGNING_SECRET, {"type": "block_actions", "user": slack.user(DANA, "dana")})
    before = await world.interactions_recorded()
    for timestamp in ("abc", "", "1e3", "-1", "9" * 5000):
        answer = await world.post(body, {**headers, "X-Slack-Request-Timestamp": timestamp})
        assert answer.status_code == 401, (timestamp[:10], answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_signature"
    assert await world.interactions_recorded() == before


async def test_a_signed_payload_of_the_wrong_shape_is_422_naming_the_part(world: SlackWorld) -> None:
    button = {"action_id": "signoff_approve", "value": json.dumps({"gate_id": "g", "action": "approve"})}
    modal = {"id": "V1", "callback_id": "signoff_decision", "private_metadata": button["value"]}
    shapes = {
        "actions[0].value": {"type": "block_actions", "actions": [{**button, "value": 7}]},
        "actions": {"type": "block_actions", "actions": {"0": button}},
        "actions[0]": {"type": "block_actions", "actions": ["signoff_approve"]},
        "user": {"type": "block_actions", "user": "UDANA0001", "actions": [button]},
        "user.id": {"type": "block_actions", "user": {"id": 7}, "actions": [button]},
        "view": {"type": "view_submission", "view": "V1"},
        "view.private_metadata": {"type": "view_submission", "view": {**modal, "private_metadata": 7}},
        "view.state.values": {"type": "view_submission", "view": {**modal, "state": {"values": ["comment"]}}},
    }
    for field, payload in shapes.items():
        answer = await world.send(payload)
        assert answer.status_code == 422, (field, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["code"] == "invalid_interaction" and problem["detail"].startswith(f"{field}: "), problem
    assert world.sink.of("/api/views.open") == []


async def test_a_replayed_submission_is_no_second_vote(world: SlackWorld) -> None:
    gate_id, _ = await world.door.open_gate(gate_request(groups=("docs",), minimum_count=2))
    await world.press(gate_id, "signoff_approve", DANA, "dana")
    view = await world.modal(1)
    values = {"input:ticket": slack.select_value("CHG-1"), "comment": slack.text_value("once")}
    payload = slack.view_submission(view, values, DANA, "dana", "VREPLAY1")
    body, headers = slack.signed(SIGNING_SECRET, payload)
    for _ in range(3):  # the very same signed request: acknowledged, ignored
        assert (await world.post(body, headers)).status_code == 200
    # The same submission signed anew (another timestamp): the decision path's idempotency makes it one vote.
    assert (await world.post(*slack.signed(SIGNING_SECRET, payload, at=time.time() + 1))).status_code == 200

    async def one_vote():
        votes = [entry for entry in await world.audit(gate_id) if entry["kind"] == "vote"]
        return votes if votes else None

    votes = await one_vote() or await eventually(one_vote, what="dana's vote")
    # While the gate is pending, the message shows the vote and keeps its buttons.
    updates = await eventually(lambda: _async(world.sink.updates_for(gate_id)), what="chat.update after the vote")
    shown = updates[-1].body
    slack.assert_blocks_valid(shown["blocks"])
    assert "Approved by dana: once" in json.dumps(shown["blocks"])
    assert any(block["type"] == "actions" for block in shown["blocks"])
    votes = [entry for entry in await world.audit(gate_id) if entry["kind"] in ("vote", "refused")]
    assert [(v["kind"], v["actor"], v["source"]) for v in votes] == [("vote", "dana", "slack")]


async def test_a_signed_request_without_signoffs_payload_is_refused_naming_the_field(world: SlackWorld) -> None:
    missing = await world.post(b"text=hello", slack.sign(SIGNING_SECRET, b"text=hello"))
    assert missing.status_code == 400 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["errors"][0]["field"] == "payload"
    other = {"type": "block_actions", "user": slack.user(DANA, "dana"), "actions": [{"action_id": "x", "value": "1"}]}
    unknown = await world.send(other)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "invalid_interaction")
    assert world.sink.of("/api/views.open") == []


async def test_without_slack_settings_the_endpoint_says_so(front_door: FrontDoor) -> None:
    body, headers = slack.signed(SIGNING_SECRET, {"type": "block_actions"})
    async with httpx.AsyncClient(base_url=front_door.url) as client:
        answer = await client.post("/slack/interactions", content=body, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (503, "slack_disabled")
