"""How a channel's failures are told and classified, against real local servers: an HTTP failure never quotes the
channel's URL (an incoming-webhook URL is its credential), a redirect is not followed, an SMTP 4xx at RCPT is
retried and a 5xx is not, and a malformed channel stops `signoff notifier` before it connects to anything."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signoff.notifier.channels import DeliveryFailed, HttpTransport, Outgoing, SmtpTransport
from signoff.notifier.domain import Routing
from tests.integration.notifier.conftest import NotifierHarness, free_port, gate_opened, smtp_server

pytestmark = pytest.mark.integration

SECRET = "T0000SECRET/B0000/XyZzY"
"""The credential part of an incoming-webhook URL (Slack's `/services/T…/B…/<token>`)."""


def outgoing(recipient: str = "hook") -> Outgoing:
    return Outgoing(7, "key-7", "chan", recipient, 1, "application/json", "Subject", "{}", None, ())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def garbage_server() -> AsyncIterator[str]:
    """A TCP server that answers anything with bytes that are not HTTP: aiohttp's ClientResponseError then quotes
    the request's URL (`url='http://…'`)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_failed_request_never_quotes_the_url(session: aiohttp.ClientSession, garbage_server: str) -> None:
    url = f"http://user:pw-XyZzY@{garbage_server}/services/{SECRET}?token={SECRET}-q"
    # What aiohttp itself says of this failure quotes the URL, credential and all:
    with pytest.raises(aiohttp.ClientResponseError) as raw:
        async with session.post(url, data=b"{}"):
            pass
    assert SECRET in str(raw.value)

    transport = HttpTransport(session, url, channel="docs-slack")
    with pytest.raises(DeliveryFailed) as failed:
        await transport.send(outgoing())
    text = str(failed.value)
    assert text == "ClientResponseError: invalid HTTP response (channel 'docs-slack')"
    assert SECRET not in text and "XyZzY" not in text and "services" not in text and "user" not in text
    assert not failed.value.permanent
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


async def test_a_deliverys_error_and_log_never_quote_the_url(
    notifier: NotifierHarness, garbage_server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """What `signoff deliveries` shows (the row's last_error) and the retry's log line, end to end."""
    (notifier.secrets / "leaky-url").write_text(f"http://{garbage_server}/services/{SECRET}\n")
    routing = Routing.from_mapping(
        {
            "channels": [{"name": "docs-slack", "type": "slack", "secret_ref": "leaky-url"}],
            "routes": [{"groups": ["docs"], "channels": ["docs-slack"]}],
        }
    )
    await notifier.start(routing, delivery_max_attempts=2)
    opened = gate_opened()
    await notifier.publish(opened)
    [row] = await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "dead", count=1, what="dead")
    assert row["attempts"] == 2
    assert row["last_error"] == "ClientResponseError: invalid HTTP response (channel 'docs-slack')"
    await notifier.stop_service()
    logged = capfd.readouterr()
    assert "delivery_retry_scheduled" in logged.err + logged.out
    assert SECRET not in logged.err + logged.out


async def test_a_refused_connection_names_the_reason_not_the_url(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/{SECRET}"
    with pytest.raises(DeliveryFailed) as failed:
        await HttpTransport(session, url, channel="docs-teams").send(outgoing())
    assert str(failed.value) == "ClientConnectorError: connection refused (channel 'docs-teams')"
    assert not failed.value.permanent


@pytest.fixture
async def redirecting_sink() -> AsyncIterator[tuple[str, list[str]]]:
    """`/moved` answers 307 to `/target` (a 307 keeps the method and body: aiohttp would re-post the signed body);
    the paths requested are recorded."""
    requested: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        requested.append(request.path)
        await request.read()
        if request.path == "/moved":
            raise web.HTTPTemporaryRedirect(f"/target?token={SECRET}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", requested
    finally:
        await runner.cleanup()


async def test_a_redirect_is_a_permanent_failure_not_followed(
    session: aiohttp.ClientSession, redirecting_sink: tuple[str, list[str]]
) -> None:
    base, requested = redirecting_sink
    transport = HttpTransport(session, f"{base}/moved", channel="ops-webhook", signing_key="webhook-signing-key")
    with pytest.raises(DeliveryFailed) as failed:
        await transport.send(outgoing())
    assert str(failed.value) == "HTTP 307: redirected (3xx), not followed"
    assert failed.value.permanent and SECRET not in str(failed.value)
    assert requested == ["/moved"]  # the signed body went nowhere else
    await HttpTransport(session, f"{base}/target", channel="ops-webhook").send(outgoing())  # a 2xx still succeeds


class RefusingHandler:
    """aiosmtpd handler refusing every recipient with the reply set in `reply` (greylisting, an unknown user)."""

    def __init__(self) -> None:
        self.reply = "451 4.7.1 Greylisted, try again later"
        self.accepted: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return self.reply

    async def handle_DATA(self, server, session, envelope) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[tuple[RefusingHandler, int]]:
    handler = RefusingHandler()
    with smtp_server(handler) as port:
        yield handler, port


async def test_an_smtp_4xx_at_rcpt_is_retried_and_a_5xx_is_not(refusing_smtp: tuple[RefusingHandler, int]) -> None:
    handler, port = refusing_smtp
    routing = Routing.from_mapping(
        {
            "channels": [
                {
                    "name": "mail",
                    "type": "email",
                    "settings": {"from": "signoff@example.com", "smtp_host": "127.0.0.1", "smtp_port": port},
                }
            ],
            "routes": [{"groups": ["docs"], "channels": ["mail"]}],
        }
    )
    transport = SmtpTransport(routing.channels["mail"], None, 5)

    with pytest.raises(DeliveryFailed) as greylisted:
        await transport.send(outgoing("bob@example.com"))
    assert not greylisted.value.permanent
    assert "451" in str(greylisted.value) and "bob@example.com" in str(greylisted.value)

    handler.reply = "550 5.1.1 No such user"
    with pytest.raises(DeliveryFailed) as unknown:
        await transport.send(outgoing("bob@example.com"))
    assert unknown.value.permanent and "550" in str(unknown.value)

    handler.reply = "250 OK"
    await transport.send(outgoing("bob@example.com"))
    assert handler.accepted == ["bob@example.com"]


def test_a_malformed_whsec_key_stops_the_notifier_in_one_line(tmp_path: Path) -> None:
    """As an operator starts it: no broker or database is reached (none is set), the key is not echoed."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "channels:\n"
        "  - name: ops-webhook\n"
        "    type: webhook\n"
        "    settings: {url: 'https://audit.example.com/signoff'}\n"
        "    secret_ref: hook-key\n"
        "routes:\n"
        "  - groups: [docs]\n"
        "    channels: [ops-webhook]\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    environment |= {
        "SIGNOFF_HOME": str(tmp_path / "no-dev-stack"),
        "SIGNOFF_HTTP_PORT": "0",
        "SIGNOFF_ROUTING_FILE": str(routing),
        "SIGNOFF_CHANNEL_SECRET_HOOK_KEY": f"whsec_{SECRET}!",
    }
    done = subprocess.run(
        [sys.executable, "-m", "signoff", "notifier"], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and SECRET not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: notifier did not start: ValueError: channel 'ops-webhook': the signing key in secret 'hook-key' "
        "(SIGNOFF_CHANNEL_SECRET_HOOK_KEY) holds a malformed whsec_ key: the part after whsec_ is not valid base64"
    ], done.stderr
