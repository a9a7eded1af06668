"""The notifier role on the real broker and PostgreSQL, with real local sinks: an aiohttp server on 127.0.0.1
standing in for Slack, Teams, webhooks and the approval page, and an aiosmtpd SMTP server.

The sink dedupes by `Idempotency-Key` (as a well-behaved receiver does) and records every request, so tests can
tell "received twice" from "accepted twice". Its paths behave as configured: `ok`, `flaky` (answers 503 to about
half of the requests, seeded), `fail-first` (503 to the first request of each key), `hang` (never answers until
the test ends), `retry-after` (429 with `Retry-After: 120`), or an HTTP status to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import json
import random
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.notifier.domain import Routing
from signoff.notifier.repository import SCHEMA
from signoff.notifier.service import notifier_spec
from signoff.notifier.settings import NotifierSettings
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.service import Service
from tests.support.waiting import eventually
from tests.unit.notifier.builders import REPO, opened_data

HMAC_KEY = "webhook-signing-key"
START = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


@dataclasses.dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink:
    """A local HTTP receiver with per-path behaviour; dedupes by idempotency key."""

    def __init__(self) -> None:
        self.behaviour: dict[str, str] = {}
        self.hits: dict[str, list[Hit]] = defaultdict(list)
        self.accepted: dict[str, dict[str, Hit]] = defaultdict(dict)
        self.release = asyncio.Event()
        self.hanging: dict[str, int] = defaultdict(int)
        self.random = random.Random(20250304)
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if path.startswith("page/"):
            return web.Response(text="approval page")
        body = await request.read()
        hit = Hit(path, dict(request.headers), body)
        self.hits[path].append(hit)
        key = request.headers.get("Idempotency-Key", "")
        mode = self.behaviour.get(path.split("/")[0], "ok")
        if mode == "hang":
            self.hanging[path] += 1
            await self.release.wait()
            return web.Response(status=503)
        if mode == "held":  # answers 200 once released: a slow sink that does accept
            self.hanging[path] += 1
            await self.release.wait()
        if mode == "flaky" and self.random.random() < 0.5:
            return web.Response(status=503, text="flaky")
        if mode == "fail-first" and sum(1 for h in self.hits[path] if h.headers.get("Idempotency-Key") == key) == 1:
            return web.Response(status=503, text="first try fails")
        if mode == "retry-after":  # Slack's and Teams' rate limit: 429 with the seconds to wait
            return web.Response(status=429, text="slow down", headers={"Retry-After": "120"})
        if mode.isdigit():
            return web.Response(status=int(mode), text="as configured")
        self.accepted[path].setdefault(key, hit)  # a repeat of a key is acknowledged, not accepted again
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        await self.runner.cleanup()


class MailSink:
    """aiosmtpd handler: keeps every message, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def by_key(self) -> dict[str, list[email.message.EmailMessage]]:
        out: dict[str, list] = defaultdict(list)
        for message in self.messages:
            out[message["X-Signoff-Idempotency-Key"]].append(message)
        return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signature_ok(hit: Hit) -> bool:
    """Verified as a Standard Webhooks receiver does (the `standardwebhooks` package): id, timestamp and body
    under the channel's key, the timestamp within 5 minutes of now."""
    try:
        Webhook(HMAC_KEY.encode()).verify(hit.body, hit.headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return hit.headers.get("webhook-id") == hit.headers.get("Idempotency-Key")


def gate_opened(**changes: Any) -> wire.GateOpened:
    """The multi-service, multi-environment GateOpened of the unit tests, with a fresh gate id."""
    data = opened_data(**changes)
    data.setdefault("gate_id", "gate")
    if "gate_id" not in changes:
        data["gate_id"] = f"gate-{uuid.uuid4().hex[:10]}"
        data["key"] = {**data["key"], "execution_id": f"exec-{uuid.uuid4().hex[:8]}"}
    return wire.GateOpened.model_validate(data)


class NotifierHarness:
    """The notifier role (`notifier_spec` + `Service`) on this test's topic, group, database and sinks."""

    def __init__(self, settings, names, tmp_path: Path, http: HttpSink, mail: MailSink, smtp_port: int) -> None:
        self.base_settings = settings
        self.names = names
        self.tmp_path = tmp_path
        self.http = http
        self.mail = mail
        self.smtp_port = smtp_port
        self.topic = names.topic("signoff.approval.gates")
        self.group = names.group("signoff-notifier")
        self.secrets = tmp_path / "secrets"
        self.secrets.mkdir()
        (self.secrets / "hook-key").write_text(HMAC_KEY)
        self.service: Service | None = None

    def routing(self, extra_channels: list[dict[str, Any]] | None = None, **top: Any) -> Routing:
        """Every channel type on the sinks, routed to group docs; `extra_channels` are routed to docs too."""
        for name in ("slack", "teams"):
            (self.secrets / f"{name}-url").write_text(f"{self.http.url}/{name}\n")
        channels = [
            {
                "name": "ops-webhook",
                "type": "webhook",
                "settings": {"url": f"{self.http.url}/hook"},
                "secret_ref": "hook-key",
            },
            {"name": "docs-slack", "type": "slack", "secret_ref": "slack-url"},
            {"name": "docs-teams", "type": "teams", "secret_ref": "teams-url"},
            {
                "name": "docs-mail",
                "type": "email",
                "settings": {"from": "signoff@example.com", "smtp_host": "127.0.0.1", "smtp_port": self.smtp_port},
            },
            *(extra_channels or []),
        ]
        return Routing.from_mapping(
            {"channels": channels, "routes": [{"groups": ["docs"], "channels": [c["name"] for c in channels]}], **top}
        )

    def settings(self, **overrides: Any) -> NotifierSettings:
        values = {
            **self.base_settings.model_dump(),
            "approval_page_url": f"{self.http.url}/page/",
            "channel_secrets_dir": self.secrets,
            "delivery_max_attempts": 4,
            "delivery_backoff_base_seconds": 0.05,
            "delivery_backoff_cap_seconds": 0.2,
            "dispatch_interval_seconds": 0.2,
            **overrides,
        }
        return NotifierSettings(**values)

    async def start(self, routing: Routing | None = None, clock: Clock | None = None, **overrides: Any) -> None:
        settings = self.settings(**overrides)
        await ensure_topics(settings.model_copy(update={"kafka_topic_partitions": 1}), [self.topic])
        if not hasattr(self, "pool"):
            self.pool = await create_pool(settings.database_url.get_secret_value())
            self.producer = make_producer(settings, "test-producer")
            await self.producer.start()
        spec = notifier_spec(
            settings,
            clock=clock or SystemClock(),
            routing=routing or self.routing(),
            catalog=Catalog.load(REPO / "examples" / "catalog.yaml"),
            topic=self.topic,
            group_id=self.group,
        )
        self.service = Service(spec, settings)
        await self.service.start()

    async def stop_service(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def close(self) -> None:
        await self.stop_service()
        if hasattr(self, "pool"):
            await self.producer.stop()
            await self.pool.close()

    async def publish(self, data: wire.EventData, *, event_id: str | None = None) -> wire.Event:
        event = wire.new_event(data, source="urn:signoff:approval", id=event_id)
        value, headers = wire.encode(event)
        await self.producer.send_and_wait(self.topic, value, key=wire.message_key(event), headers=headers)
        return event

    async def deliveries(self, gate_id: str | None = None) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT * FROM "{SCHEMA}".deliveries WHERE $1::text IS NULL OR gate_id = $1 ORDER BY id',  # noqa: S608
                gate_id,
            )
        return [dict(row) for row in rows]

    async def wait_deliveries(self, gate_id: str | None, done, *, count: int, what: str) -> list[dict[str, Any]]:
        async def check():
            rows = await self.deliveries(gate_id)
            return rows if len(rows) >= count and all(done(row) for row in rows) else None

        return await eventually(check, timeout=60, what=what)


@pytest.fixture
async def http_sink() -> AsyncIterator[HttpSink]:
    sink = HttpSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@contextlib.contextmanager
def smtp_server(handler: Any) -> Iterator[int]:
    """A real SMTP server (aiosmtpd) on a free loopback port, answering with `handler`: its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def mail_sink() -> Any:
    sink = MailSink()
    with smtp_server(sink) as port:
        yield sink, port


@pytest.fixture
async def notifier(settings, names, tmp_path, http_sink, mail_sink) -> AsyncIterator[NotifierHarness]:
    mail, port = mail_sink
    harness = NotifierHarness(settings, names, tmp_path, http_sink, mail, port)
    try:
        yield harness
    finally:
        await harness.close()
