"""Slack, played locally: an aiohttp server on 127.0.0.1 answering Slack's Web API (`/api/<method>`, JSON or form
bodies, `{"ok": true, ...}` as Slack answers) and the interactions' `response_url`s, recording every request; and
interaction payloads signed exactly as Slack signs them (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>` under the
signing secret, the body a form with one `payload` field). Payload shapes follow Slack's reference
(docs.slack.dev/reference/interaction-payloads: block_actions, view_submission)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

TEAM = {"id": "T0SIGNOFF", "domain": "signoff-tests"}
APP_ID = "A0SIGNOFF"


@dataclass
class Call:
    """One request the sink received."""

    path: str
    body: dict[str, Any]
    authorization: str | None
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class SlackSink:
    """Records `chat.postMessage`, `chat.update`, `views.open` and `response_url` posts; answers like Slack."""

    calls: list[Call] = field(default_factory=list)
    url: str = ""
    error: str | None = None
    """When set, Web API calls answer `{"ok": false, "error": <error>}` (HTTP 200, as Slack does)."""
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self) -> str:
        return f"{self.url}/response/{uuid.uuid4().hex}"

    async def _body(self, request: web.Request) -> dict[str, Any]:
        text = await request.text()
        if request.content_type == "application/json":
            return json.loads(text or "{}")
        return dict(parse_qsl(text))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        answer: dict[str, Any] = {"ok": True}
        if self.error is not None:
            answer = {"ok": False, "error": self.error}
        elif method in ("chat.postMessage", "chat.update"):
            ts = body.get("ts") or f"{1700000000 + next(self._ts)}.000100"
            answer |= {"channel": body.get("channel"), "ts": ts, "message": {"text": body.get("text"), "ts": ts}}
        elif method == "views.open":
            answer |= {"view": {"id": f"V{uuid.uuid4().hex[:10].upper()}", **json.loads(json.dumps(body["view"]))}}
        self.calls.append(Call(f"/api/{method}", body, request.headers.get("Authorization"), answer))
        return web.json_response(answer)

    async def _response(self, request: web.Request) -> web.Response:
        self.calls.append(Call(request.path, await request.json(), request.headers.get("Authorization")))
        return web.Response(text="ok")

    def of(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def posts_for(self, gate_id: str) -> list[Call]:
        return [call for call in self.of("/api/chat.postMessage") if gate_id in json.dumps(call.body)]

    def updates_for(self, gate_id: str) -> list[Call]:
        """Updates of the gate's posted message (same channel and `ts`)."""
        posted = {(call.answer["channel"], call.answer["ts"]) for call in self.posts_for(gate_id)}
        return [call for call in self.of("/api/chat.update") if (call.body["channel"], call.body["ts"]) in posted]

    def responses(self) -> list[Call]:
        return [call for call in self.calls if call.path.startswith("/response/")]


def signed(secret: str, payload: dict[str, Any], *, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers Slack sends for `payload`, signed with `secret` at `at` (now by default)."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return body, sign(secret, body, at=at)


def sign(secret: str, body: bytes, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


def user(slack_id: str, name: str) -> dict[str, Any]:
    return {"id": slack_id, "username": name, "name": name, "team_id": TEAM["id"]}


def block_actions(posted: dict[str, Any], ts: str, action_id: str, slack_id: str, name: str, response_url: str):
    """The `block_actions` payload of a press of button `action_id` on the posted message."""
    actions = next(block for block in posted["blocks"] if block["type"] == "actions")
    button = next(element for element in actions["elements"] if element["action_id"] == action_id)
    return {
        "type": "block_actions",
        "user": user(slack_id, name),
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": posted["channel"], "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.1234.{uuid.uuid4().hex}",
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": posted["channel"], "name": "releases"},
        "message": {"type": "message", "ts": ts, "text": posted["text"], "blocks": posted["blocks"], "bot_id": "B01"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": actions["block_id"],
                "text": button["text"],
                "value": button["value"],
                "style": button.get("style"),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def view_submission(view: dict[str, Any], values: dict[str, Any], slack_id: str, name: str, view_id: str):
    """The `view_submission` payload of the modal `view` (as views.open sent it) with state `values`."""
    return {
        "type": "view_submission",
        "team": TEAM,
        "user": user(slack_id, name),
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.5678.{uuid.uuid4().hex}",
        "view": {
            "id": view_id,
            "team_id": TEAM["id"],
            "type": "modal",
            "blocks": view["blocks"],
            "private_metadata": view["private_metadata"],
            "callback_id": view["callback_id"],
            "state": {"values": values},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": view["title"],
            "clear_on_close": False,
            "notify_on_close": False,
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "external_id": "",
            "app_installed_team_id": TEAM["id"],
            "bot_id": "B01",
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def text_value(value: str) -> dict[str, Any]:
    return {"value": {"type": "plain_text_input", "value": value}}


def select_value(value: str | None) -> dict[str, Any]:
    option = {"text": {"type": "plain_text", "text": value, "emoji": False}, "value": value} if value else None
    return {"value": {"type": "static_select", "selected_option": option}}


def assert_blocks_valid(blocks: list[dict[str, Any]]) -> None:
    """Every block passes slack_sdk's Block Kit validation and survives its round trip unchanged."""
    from slack_sdk.models.blocks import Block

    assert 0 < len(blocks) <= 50
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()
        assert block.to_dict() == raw, raw


def assert_view_valid(view: dict[str, Any]) -> None:
    """The modal passes slack_sdk's View validation and survives its round trip unchanged."""
    from slack_sdk.models.views import View

    model = View(**view)
    model.validate_json()
    assert model.to_dict() == view
    assert_blocks_valid(view["blocks"])


def assert_message_valid(body: dict[str, Any]) -> None:
    """A response_url message: Slack's fields, a text."""
    assert body["response_type"] == "ephemeral" and body["replace_original"] is False and body["text"]
