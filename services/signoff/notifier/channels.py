"""Transports: how a rendered delivery leaves the notifier, one per routing channel.

- webhook: HTTP POST of the CloudEvent data (CloudEvents HTTP binding, binary mode: `ce-*` headers), signed per
  Standard Webhooks (`webhook-id` = the idempotency key, `webhook-timestamp` = this try's Unix time,
  `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), so a receiver can refuse a replay
  (docs/notifications.md, "Verifying a webhook").
- slack / teams: HTTP POST of the Block Kit / Adaptive Card payload to the incoming-webhook URL (a secret).
- slack in bot mode (`settings.channel`): Slack's Web API under a bot token (a secret) with slack_sdk's
  AsyncWebClient: the gate's request is posted once (`chat.postMessage`, its channel and `ts` stored), every later
  event of the gate updates that message (`chat.update`), in order (an older update arriving late is skipped).
- email: SMTP (aiosmtplib), multipart/alternative text + HTML; `Message-ID` derives from the idempotency key.
- log: the text message as a log line, and appended as a JSON line to `settings.path` when set (development).

Every request carries `Idempotency-Key` (e-mail: `X-Signoff-Idempotency-Key` and the Message-ID), the same on
every try of a delivery, so a sink can drop a repeat after a retry or a crash mid-send, and the W3C `traceparent`
of the run (HTTP and e-mail header alike): the send's span when tracing is on, else the gate event's.

A failure raises `DeliveryFailed`; `permanent` ones (an HTTP 3xx, which is not followed, or 4xx other than 408 /
425 / 429; an SMTP 5xx, at RCPT or elsewhere) are dead-lettered at once, the others (an SMTP 4xx such as greylisting)
retried, no sooner than a 429 / 503 response's `Retry-After`. A failure's text never quotes an HTTP channel's URL:
an incoming-webhook URL is the channel's credential, and the text is shown by `signoff deliveries` and logged.

`check_channels` reads every channel's configuration (secrets, URLs, the `whsec_` key, the SMTP port) without
connecting to anything, so the role refuses to start on a bad one instead of failing once it is running.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import aiosmtplib
import asyncpg
import structlog
import yarl
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from standardwebhooks.webhooks import Webhook

from signoff.notifier.domain import Channel, Routing
from signoff.notifier.domain.routing import slack_bot
from signoff.notifier.domain.slack import UPDATE_KINDS
from signoff.notifier.repository import NotifierRepository
from signoff.runtime import tracing

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
TRACEPARENT_HEADER = "traceparent"
RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Outgoing:
    """One try of one delivery."""

    delivery_id: int
    idempotency_key: str
    channel: str
    recipient: str
    attempt: int
    content_type: str
    subject: str | None
    body: str
    html: str | None
    headers: tuple[tuple[str, str], ...]
    gate_id: str = ""
    kind: str = ""
    """What the delivery tells: `opened`, `vote`, `reminder`, an outcome (`approved`, ...)."""
    traceparent: str | None = None
    """The trace of the gate event the delivery tells about (the request carries it, or the send's span)."""


class DeliveryFailed(Exception):
    """A try failed; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        """How long the channel asked us to wait (`Retry-After` of a 429 / 503), if it did."""


class Transport(Protocol):
    """Sends one delivery try; returns on success, raises `DeliveryFailed` (or any error: retried)."""

    async def send(self, outgoing: Outgoing) -> None:
        """Send `outgoing` once."""
        ...


class SecretMissing(ValueError):
    """A routing `secret_ref` names a secret found neither in the environment nor in the secrets folder."""


class Secrets:
    """Channel secrets by `secret_ref`: the variable `SIGNOFF_CHANNEL_SECRET_<REF>` (upper case, `-` and `.` as
    `_`), else the file `<folder>/<ref>` (a mounted Kubernetes Secret key)."""

    def __init__(self, folder: Path | None, environ: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.environ = os.environ if environ is None else environ

    @staticmethod
    def variable(ref: str) -> str:
        """The environment variable holding secret `ref`."""
        return "SIGNOFF_CHANNEL_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", ref).upper()

    def get(self, ref: str) -> str:
        """The secret's value (stripped of surrounding whitespace); raises `SecretMissing`."""
        value = self.environ.get(self.variable(ref))
        if value is None and self.folder is not None and "/" not in ref and ref not in (".", ".."):
            path = self.folder / ref
            if path.is_file():
                value = path.read_text()
        if value is None or not value.strip():
            where = f" or file {self.folder / ref}" if self.folder is not None else ""
            raise SecretMissing(f"secret {ref!r} not found: set {self.variable(ref)}{where}")
        return value.strip()


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A `Retry-After` header's wait (delay-seconds or an HTTP-date, RFC 9110), or None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def _http_error(status: int, text: str, headers: Mapping[str, str]) -> DeliveryFailed:
    if 300 <= status < 400:
        # Not followed: the signed body would be posted again to wherever `Location` says. A webhook URL that
        # answers with a redirect is a misconfigured one (like a 4xx), and its Location is not quoted (it may
        # carry the credential too).
        return DeliveryFailed(f"HTTP {status}: redirected (3xx), not followed", permanent=True)
    permanent = 400 <= status < 500 and status not in RETRYABLE_STATUS
    wait = retry_after(headers.get("Retry-After"), datetime.now(UTC)) if status in (429, 503) else None
    return DeliveryFailed(f"HTTP {status}: {text[:200]}", permanent=permanent, retry_after=wait)


def _client_failure(channel: str, exc: aiohttp.ClientError) -> DeliveryFailed:
    """A request that got no usable answer, told by the exception's type and a reason in our own words, the channel
    naming where it went: aiohttp's own messages quote the URL (`Connection timeout to host <url>`, a
    `ClientResponseError`'s `url=...`), and an incoming-webhook URL is the channel's credential."""
    return DeliveryFailed(f"{type(exc).__name__}: {_client_reason(exc)} (channel {channel!r})")


def _client_reason(exc: aiohttp.ClientError) -> str:
    """What went wrong with a request, without a word of its URL (host, path, query or userinfo)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return "TLS handshake or certificate refused"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientConnectionResetError):
        return "connection closed by the server"
    if isinstance(exc, aiohttp.ClientOSError):  # connector errors too: their text names the host
        if isinstance(exc.__cause__, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return "connection refused"
        name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
        return f"connection failed ({name})" if name else "connection failed"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, aiohttp.ClientResponseError):  # the answer could not be parsed as HTTP
        return "invalid HTTP response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short or malformed"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "invalid URL"
    return "request failed"


def http_url(url: str, what: str) -> str:
    """`url` when it is an absolute http(s) URL with a host, as aiohttp reads it; else ValueError naming `what`
    (the setting), never the URL, which may be the channel's credential."""
    try:
        parsed = yarl.URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or not parsed.is_absolute():
        raise ValueError(f"{what} is not a valid http(s) URL with a host")
    return url


def webhook_key(key: str, what: str) -> bytes:
    """The HMAC key of a webhook secret: `whsec_<base64>` (Standard Webhooks' form, padding optional) decoded, any
    other text its UTF-8 bytes. ValueError naming `what` (the secret) when the `whsec_` key is malformed; the key
    is never quoted."""
    if not key.startswith("whsec_"):
        return key.encode()
    encoded = key.removeprefix("whsec_")
    try:
        # validate: a lax decoder drops characters outside the alphabet, so sender and receiver could hold
        # different keys; the padding is optional, as Standard Webhooks' libraries read it.
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} holds a malformed whsec_ key: the part after whsec_ is not valid base64") from None
    if not decoded:
        raise ValueError(f"{what} holds an empty whsec_ key")
    return decoded


class WebhookSigner:
    """Standard Webhooks' `v1` signature (what `standardwebhooks.Webhook.sign` computes) over the body's bytes as
    they are sent, so a body is encoded once per try, not once more to be signed."""

    def __init__(self, key: str | bytes) -> None:
        """`key`: `whsec_<base64>` (Standard Webhooks' form, base64-decoded) or the key's bytes."""
        self.key = Webhook(key)._whsecret  # the library's reading of the key (prefix, padding), not a copy of it

    def sign(self, msg_id: str, moment: datetime, body: str | bytes) -> str:
        """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the timestamp in whole Unix seconds."""
        data = body.encode() if isinstance(body, str) else body
        # hmac.digest: the one-shot HMAC in C (OpenSSL), several times cheaper than an hmac.HMAC object per try.
        signed = f"{msg_id}.{int(moment.timestamp())}.".encode() + data
        return "v1," + base64.b64encode(hmac.digest(self.key, signed, hashlib.sha256)).decode()


class HttpTransport:
    """POST to a URL: Slack / Teams incoming webhooks, and signed CloudEvents webhooks when `signing_key` is set."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        channel: str,
        signing_key: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`channel`: the routing channel's name, what a failure names (never the URL). `signing_key`: the
        channel's secret; `whsec_<base64>` (Standard Webhooks' form) is the base64-decoded key, any other text its
        UTF-8 bytes. `now`: the clock of `webhook-timestamp`."""
        self.session = session
        self.url = http_url(url, "the URL")
        self.channel = channel
        self.signer = None
        if signing_key is not None:
            self.signer = WebhookSigner(webhook_key(signing_key, "the signing key"))
        self.now = now

    async def send(self, outgoing: Outgoing) -> None:
        body = outgoing.body.encode()
        headers = {name: value for name, value in outgoing.headers}
        headers.setdefault("content-type", outgoing.content_type)
        headers[IDEMPOTENCY_HEADER] = outgoing.idempotency_key
        traceparent = tracing.current_traceparent(outgoing.traceparent)
        if traceparent is not None:
            headers[TRACEPARENT_HEADER] = traceparent
        if self.signer is not None:
            # Standard Webhooks: the id is the same on every try (receivers dedupe on it), the timestamp is this
            # try's, and the signature covers both with the body, so a captured request cannot be replayed later.
            moment = self.now()
            headers["webhook-id"] = outgoing.idempotency_key
            headers["webhook-timestamp"] = str(int(moment.timestamp()))
            headers["webhook-signature"] = self.signer.sign(outgoing.idempotency_key, moment, body)
        try:
            # allow_redirects=False: a 3xx is a failed delivery (`_http_error`), the signed body is never re-posted
            # to another address.
            async with self.session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if response.status >= 300:
                    raise _http_error(response.status, await response.text(errors="replace"), response.headers)
        except aiohttp.ClientError as exc:
            # from None: the cause's text (and a traceback logged with it) would quote the URL.
            raise _client_failure(self.channel, exc) from None


class SlackBotTransport:
    """Slack's Web API under a bot token: posts a gate's request once, then updates that message in place."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: AsyncWebClient,
        channel: str,
        slack_channel: str,
        *,
        repository: NotifierRepository | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool, self.client, self.channel, self.slack_channel = pool, client, channel, slack_channel
        self.repository = repository or NotifierRepository()
        self.now = now

    async def send(self, outgoing: Outgoing) -> None:
        payload = json.loads(outgoing.body)
        try:
            if outgoing.kind in UPDATE_KINDS:
                await self._update(outgoing, payload)
            elif outgoing.kind == "opened":
                await self._post_request(outgoing, payload)
            else:  # reminders, escalations, refused requests: a message of their own
                await self.client.chat_postMessage(channel=self.slack_channel, **payload)
        except SlackApiError as exc:
            raise _slack_error(exc) from None
        except (SlackClientError, aiohttp.ClientError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc

    async def _post_request(self, outgoing: Outgoing, payload: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn:
            if await self.repository.slack_message(conn, outgoing.gate_id, self.channel) is not None:
                return  # posted by an earlier try whose success was not recorded: never post twice
        answer = await self.client.chat_postMessage(channel=self.slack_channel, **payload)
        async with self.pool.acquire() as conn:
            await self.repository.remember_slack_message(
                conn, outgoing.gate_id, self.channel, str(answer["channel"]), str(answer["ts"]), self.now()
            )

    async def _update(self, outgoing: Outgoing, payload: dict[str, Any]) -> None:
        # The row lock serialises one gate's updates across replicas and lanes; `updated_by` keeps a late, older
        # update (a retry of the vote after the outcome went out) from undoing a newer one.
        async with self.pool.acquire() as conn, conn.transaction():
            message = await self.repository.lock_slack_message(conn, outgoing.gate_id, self.channel)
            if message is None:
                raise DeliveryFailed("the gate's request message is not posted yet")
            if message["updated_by"] is not None and message["updated_by"] > outgoing.delivery_id:
                return
            await self.client.chat_update(channel=message["slack_channel"], ts=message["ts"], **payload)
            await self.repository.slack_message_updated(
                conn, outgoing.gate_id, self.channel, outgoing.delivery_id, self.now()
            )


def _slack_error(exc: SlackApiError) -> DeliveryFailed:
    """A Web API refusal: rate limits and Slack's own trouble are retried, the rest (a bad token, an unknown
    channel, an invalid block) cannot get better."""
    response = exc.response
    error = str(response.get("error", "")) if response is not None else ""
    status = response.status_code if response is not None else 0
    wait = retry_after(response.headers.get("Retry-After"), datetime.now(UTC)) if response is not None else None
    transient = status in (429, 500, 502, 503, 504) or error in ("ratelimited", "internal_error", "fatal_error")
    return DeliveryFailed(f"Slack {status} {error}", permanent=not transient, retry_after=wait)


class SmtpTransport:
    """E-mail through an SMTP server (`settings`: from, smtp_host, smtp_port, starttls, use_tls, username)."""

    def __init__(self, channel: Channel, password: str | None, timeout: float) -> None:
        settings = channel.settings
        self.sender = str(settings["from"])
        self.host = str(settings.get("smtp_host", "127.0.0.1"))
        self.port = int(settings.get("smtp_port", 25))
        # Unset: STARTTLS when the server offers it (aiosmtplib's default); true requires it, false never.
        self.start_tls = bool(settings["starttls"]) if "starttls" in settings else None
        self.use_tls = bool(settings.get("use_tls", False))
        self.username = str(settings["username"]) if settings.get("username") else None
        self.password = password
        self.timeout = timeout

    def message(self, outgoing: Outgoing) -> EmailMessage:
        """The MIME message of a delivery: text and (when rendered) HTML alternatives."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = outgoing.recipient
        message["Subject"] = outgoing.subject or "signoff notification"
        message["Message-ID"] = f"<{outgoing.idempotency_key}@signoff>"
        message["X-Signoff-Idempotency-Key"] = outgoing.idempotency_key
        traceparent = tracing.current_traceparent(outgoing.traceparent)
        if traceparent is not None:
            message[TRACEPARENT_HEADER] = traceparent
        message.set_content(outgoing.body)
        if outgoing.html:
            message.add_alternative(outgoing.html, subtype="html")
        return message

    async def send(self, outgoing: Outgoing) -> None:
        try:
            await aiosmtplib.send(
                self.message(outgoing),
                hostname=self.host,
                port=self.port,
                start_tls=self.start_tls,
                use_tls=self.use_tls,
                username=self.username,
                password=self.password if self.username else None,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _recipients_refused(exc) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {exc.code}: {exc.message}", permanent=500 <= exc.code < 600) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc


def _recipients_refused(exc: aiosmtplib.SMTPRecipientsRefused) -> DeliveryFailed:
    """Every recipient refused at RCPT: permanent only when each refusal is a 5xx; a 4xx (greylisting's 451, a full
    mailbox, a server short of resources) is the server's "try again later"."""
    refusals = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
    permanent = bool(exc.recipients) and all(500 <= r.code < 600 for r in exc.recipients)
    return DeliveryFailed(f"recipient refused: {refusals}", permanent=permanent)


class LogTransport:
    """The development channel: the message in the log, and as a JSON line in `path` when set."""

    def __init__(self, channel: str, path: Path | None) -> None:
        self.channel = channel
        self.path = path
        self._lock = asyncio.Lock()

    async def send(self, outgoing: Outgoing) -> None:
        log.info(
            "notification",
            channel=self.channel,
            subject=outgoing.subject,
            key=outgoing.idempotency_key,
            text=outgoing.body,  # what an approver would read: the dev stack's way of showing notifications
        )
        if self.path is None:
            return
        line = json.dumps(
            {"key": outgoing.idempotency_key, "subject": outgoing.subject, "text": outgoing.body}, ensure_ascii=False
        )
        async with self._lock:
            await asyncio.to_thread(_append, self.path, line + "\n")


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def check_channels(routing: Routing, secrets: Secrets) -> None:
    """Every channel's configuration read as its transport reads it (its secret found, its URLs valid, its `whsec_`
    key decoded, its SMTP port a port), connecting to nothing: the role's start-up check. Raises ValueError
    `channel '<name>': ...` naming the setting or the secret, never a secret's value."""
    for name, channel in routing.channels.items():
        try:
            _check_channel(channel, secrets)
        except ValueError as exc:  # SecretMissing too
            raise ValueError(f"channel {name!r}: {exc}") from None


def _check_channel(channel: Channel, secrets: Secrets) -> None:
    """One channel's check; its ValueError names the setting (check_channels adds the channel)."""
    secret = secrets.get(channel.secret_ref) if channel.secret_ref else None
    where = f"secret {channel.secret_ref!r} ({secrets.variable(channel.secret_ref)})" if channel.secret_ref else ""
    if slack_bot(channel):
        http_url(str(channel.settings.get("api_url", "https://slack.com/api/")), "settings.api_url")
    elif channel.type in ("slack", "teams"):
        assert secret is not None  # the routing model requires secret_ref
        http_url(secret, f"the incoming-webhook URL in {where}")
    elif channel.type == "webhook":
        assert secret is not None
        http_url(str(channel.settings["url"]), "settings.url")
        webhook_key(secret, f"the signing key in {where}")
    elif channel.type == "email":
        port = channel.settings.get("smtp_port", 25)
        text = "" if isinstance(port, bool | float) else str(port).strip()  # 25 or "25", as SmtpTransport reads it
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError("settings.smtp_port is not a port number (1 to 65535)")


def build_transports(
    routing: Routing,
    secrets: Secrets,
    session: aiohttp.ClientSession,
    *,
    default_timeout: float,
    pool: asyncpg.Pool | None = None,
) -> dict[str, Transport]:
    """A transport per routing channel, for channels `check_channels` passed (the role's spec checks them before
    it starts); a ValueError still names the channel. `pool`: where Slack channels in bot mode keep their messages'
    ids (required when one is routed)."""
    transports: dict[str, Transport] = {}
    for name, channel in routing.channels.items():
        try:
            if slack_bot(channel):
                assert channel.secret_ref is not None
                if pool is None:
                    raise ValueError("a slack channel in bot mode needs the notifier's database")
                client = AsyncWebClient(
                    token=secrets.get(channel.secret_ref),
                    base_url=str(channel.settings.get("api_url", "https://slack.com/api/")),
                    session=session,
                    timeout=math.ceil(channel.send_timeout(default_timeout)),  # the SDK takes whole seconds
                )
                transports[name] = SlackBotTransport(pool, client, name, str(channel.settings["channel"]))
            elif channel.type in ("slack", "teams"):
                assert channel.secret_ref is not None  # the routing model requires it
                transports[name] = HttpTransport(session, secrets.get(channel.secret_ref), channel=name)
            elif channel.type == "webhook":
                assert channel.secret_ref is not None
                key = secrets.get(channel.secret_ref)
                transports[name] = HttpTransport(session, str(channel.settings["url"]), channel=name, signing_key=key)
            elif channel.type == "email":
                password = secrets.get(channel.secret_ref) if channel.secret_ref else None
                transports[name] = SmtpTransport(channel, password, channel.send_timeout(default_timeout))
            else:
                path = channel.settings.get("path")
                transports[name] = LogTransport(name, Path(str(path)) if path else None)
        except (SecretMissing, ValueError) as exc:
            raise ValueError(f"channel {name!r}: {exc}") from None
    return transports
