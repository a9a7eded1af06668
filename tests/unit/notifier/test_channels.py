"""Channel secrets, fixed-address e-mail routing, the log rendering and the e-mail MIME message (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from signoff.notifier.channels import (
    HttpTransport,
    Outgoing,
    SecretMissing,
    Secrets,
    SmtpTransport,
    _client_failure,
    _http_error,
    _recipients_refused,
    check_channels,
    retry_after,
    webhook_key,
)
from signoff.notifier.domain import ApprovalView, Routing, next_attempt, render
from signoff.notifier.domain.retry import MAX_RETRY_AFTER
from tests.unit.notifier.builders import NOW, PAGE, REPO, catalog, opened


def test_a_secret_comes_from_the_environment_before_the_folder(tmp_path: Path) -> None:
    (tmp_path / "slack-hook").write_text("http://127.0.0.1:1/from-file\n")
    secrets = Secrets(tmp_path, environ={"SIGNOFF_CHANNEL_SECRET_SLACK_HOOK": "http://127.0.0.1:1/from-env"})
    assert secrets.get("slack-hook") == "http://127.0.0.1:1/from-env"
    assert Secrets(tmp_path, environ={}).get("slack-hook") == "http://127.0.0.1:1/from-file"
    with pytest.raises(SecretMissing, match="SIGNOFF_CHANNEL_SECRET_NOPE"):
        Secrets(tmp_path, environ={}).get("nope")
    with pytest.raises(SecretMissing):
        Secrets(tmp_path, environ={}).get("../slack-hook")  # never outside the folder


def test_http_statuses_are_permanent_or_retried() -> None:
    assert _http_error(404, "", {}).permanent and _http_error(400, "", {}).permanent
    assert not _http_error(429, "", {}).permanent and not _http_error(503, "", {}).permanent
    assert not _http_error(408, "", {}).permanent


def test_a_redirect_is_a_permanent_failure_that_does_not_quote_its_location() -> None:
    for status in (301, 302, 307, 308):
        failed = _http_error(status, "moved to https://elsewhere.example/secret", {"Location": "/secret"})
        assert failed.permanent and str(failed) == f"HTTP {status}: redirected (3xx), not followed"


def test_a_client_error_is_told_without_its_url() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XyZzYsecret"
    timeout = aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")  # what aiohttp raises
    assert str(_client_failure("docs-slack", timeout)) == "ConnectionTimeoutError: timeout (channel 'docs-slack')"
    invalid = aiohttp.InvalidUrlClientError(url)
    assert str(_client_failure("docs-slack", invalid)) == "InvalidUrlClientError: invalid URL (channel 'docs-slack')"
    assert not _client_failure("docs-slack", timeout).permanent


def test_an_smtp_refusal_at_rcpt_is_permanent_only_when_every_reply_is_a_5xx() -> None:
    def refused(*codes: int) -> aiosmtplib.SMTPRecipientsRefused:
        return aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(code, "no", f"r{i}@example.com") for i, code in enumerate(codes)]
        )

    assert _recipients_refused(refused(550)).permanent and _recipients_refused(refused(550, 553)).permanent
    assert not _recipients_refused(refused(451)).permanent and not _recipients_refused(refused(550, 451)).permanent
    assert str(_recipients_refused(refused(451))) == "recipient refused: r0@example.com: 451 no"


def test_retry_after_is_read_from_429_and_503_as_seconds_or_a_date() -> None:
    now = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert retry_after("120", now) == timedelta(seconds=120)
    assert retry_after("Tue, 04 Mar 2025 10:05:00 GMT", now) == timedelta(minutes=5)
    assert retry_after("Tue, 04 Mar 2025 09:00:00 GMT", now) == timedelta(0)
    assert retry_after("soon", now) is None and retry_after(None, now) is None
    assert _http_error(429, "", {"Retry-After": "30"}).retry_after == timedelta(seconds=30)
    assert _http_error(503, "", {"Retry-After": "30"}).retry_after == timedelta(seconds=30)
    assert _http_error(500, "", {"Retry-After": "30"}).retry_after is None


def test_the_next_try_waits_at_least_what_the_channel_asked() -> None:
    now = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    plain = next_attempt(1, now, rand=lambda: 0.0)
    assert plain == now + timedelta(seconds=1)
    assert next_attempt(1, now, rand=lambda: 0.0, retry_after=timedelta(seconds=90)) == now + timedelta(seconds=90)
    assert next_attempt(1, now, rand=lambda: 0.0, retry_after=timedelta(days=2)) == now + MAX_RETRY_AFTER
    assert next_attempt(8, now, rand=lambda: 0.0, retry_after=timedelta(seconds=90)) is None  # the last try


def test_the_documented_webhook_signature_recomputes() -> None:
    """docs/notifications.md, "Verifying a webhook": the worked example, through the transport's own signer."""
    text = (REPO / "docs" / "notifications.md").read_text().split("## Verifying a webhook", 1)[1]
    example = dict(line.split(": ", 1) for line in text.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines())
    signed = f"{example['webhook-id']}.{example['webhook-timestamp']}.{example['body']}"
    assert example["signed"] == signed
    digest = hmac.new(b"webhook-signing-key", signed.encode(), hashlib.sha256).digest()
    assert example["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    moment = datetime.fromtimestamp(int(example["webhook-timestamp"]), UTC)
    transport = HttpTransport(None, "https://hooks.example.com", channel="hook", signing_key="webhook-signing-key")  # type: ignore[arg-type]
    assert transport.signer is not None
    assert transport.signer.sign(example["webhook-id"], moment, example["body"]) == example["webhook-signature"]


def routing(**mail_settings) -> Routing:
    return Routing.from_mapping(
        {
            "channels": [
                {"name": "mail", "type": "email", "settings": {"from": "s@example.com", **mail_settings}},
                {"name": "dev", "type": "log"},
            ],
            "routes": [{"groups": ["docs"], "channels": ["mail", "dev"]}],
        }
    )


def test_an_email_channel_with_fixed_addresses_gets_one_delivery_per_event() -> None:
    view = ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE, event_id="e1")
    approvers = opened().eligible_approvers
    per_approver = routing().deliveries_for(view, approvers)
    assert sorted(d.recipient for d in per_approver) == ["bob@example.com", "carol@example.com", "dev"]
    fixed = routing(to="Release@example.com, ops@example.com").deliveries_for(view, approvers)
    assert sorted(d.recipient for d in fixed) == ["dev", "release@example.com, ops@example.com"]


def test_the_log_channel_gets_the_plain_text() -> None:
    view = ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE, event_id="e1")
    message = render(view, "log")
    assert message.content_type.startswith("text/plain") and "Checkout API" in message.body
    assert message.alternative_html is None


def test_the_mail_message_has_both_bodies_and_a_stable_message_id() -> None:
    channel = routing().channels["mail"]
    outgoing = Outgoing(1, "abc123", "mail", "bob@example.com", 1, "text/plain", "Subject", "text", "<p>html</p>", ())
    message = SmtpTransport(channel, None, 5).message(outgoing)
    assert message["Message-ID"] == "<abc123@signoff>" and message["X-Signoff-Idempotency-Key"] == "abc123"
    assert message.get_body(("plain",)).get_content() == "text\n"
    assert message.get_body(("html",)).get_content() == "<p>html</p>\n"


def test_without_a_routing_file_everything_goes_to_the_log_channel() -> None:
    from signoff.notifier.service import load_routing
    from signoff.notifier.settings import NotifierSettings

    routing = load_routing(NotifierSettings(routing_file=None))
    assert [channel.type for channel in routing.channels_for_groups(["any-group"])] == ["log"]


KEY_SECRET = "c2VjcmV0LWtleS1ieXRlcw"  # base64 of b"secret-key-bytes", unpadded as Standard Webhooks keys may be


def webhook_routing(url: str = "https://audit.example.com/signoff") -> Routing:
    return Routing.from_mapping(
        {
            "channels": [
                {"name": "audit", "type": "webhook", "settings": {"url": url}, "secret_ref": "audit-key"},
                {"name": "sre-slack", "type": "slack", "secret_ref": "slack-hook"},
                {"name": "mail", "type": "email", "settings": {"from": "s@example.com", "smtp_port": "587"}},
            ],
            "routes": [{"groups": ["docs"], "channels": ["audit", "sre-slack", "mail"]}],
        }
    )


def channel_secrets(key: str = f"whsec_{KEY_SECRET}", hook: str = "https://hooks.slack.com/services/T/B/X") -> Secrets:
    return Secrets(None, environ={"SIGNOFF_CHANNEL_SECRET_AUDIT_KEY": key, "SIGNOFF_CHANNEL_SECRET_SLACK_HOOK": hook})


def test_a_whsec_key_is_base64_decoded_padded_or_not() -> None:
    assert webhook_key(f"whsec_{KEY_SECRET}", "key") == b"secret-key-bytes"
    assert webhook_key(f"whsec_{KEY_SECRET}==", "key") == b"secret-key-bytes"
    assert webhook_key("plain-key", "key") == b"plain-key"
    check_channels(webhook_routing(), channel_secrets())  # a good configuration passes


@pytest.mark.parametrize("key", [f"whsec_{KEY_SECRET}!", "whsec_a", f"whsec_{KEY_SECRET[:5]} {KEY_SECRET[5:]}"])
def test_a_malformed_whsec_key_is_refused_at_start_naming_the_secret_not_its_value(key: str) -> None:
    with pytest.raises(ValueError, match="malformed whsec_ key") as refused:
        check_channels(webhook_routing(), channel_secrets(key=key))
    assert str(refused.value) == (
        "channel 'audit': the signing key in secret 'audit-key' (SIGNOFF_CHANNEL_SECRET_AUDIT_KEY) holds a "
        "malformed whsec_ key: the part after whsec_ is not valid base64"
    )
    assert KEY_SECRET[5:] not in str(refused.value)
    with pytest.raises(ValueError, match="empty whsec_ key"):
        check_channels(webhook_routing(), channel_secrets(key="whsec_"))


@pytest.mark.parametrize(
    "hook", ["hooks.slack.com/services/T/B/XyZzY", "http:///services/XyZzY", "https://u:p/XyZzY@h/", "ftp://h/XyZzY"]
)
def test_a_malformed_incoming_webhook_url_is_refused_without_echoing_it(hook: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_channels(webhook_routing(), channel_secrets(hook=hook))
    assert str(refused.value) == (
        "channel 'sre-slack': the incoming-webhook URL in secret 'slack-hook' (SIGNOFF_CHANNEL_SECRET_SLACK_HOOK) "
        "is not a valid http(s) URL with a host"
    )
    assert "XyZzY" not in str(refused.value)


def test_a_malformed_webhook_url_or_smtp_port_or_missing_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"^channel 'audit': settings.url is not a valid http"):
        check_channels(webhook_routing("https://[::1/signoff"), channel_secrets())
    mail = Routing.from_mapping(
        {
            "channels": [{"name": "mail", "type": "email", "settings": {"from": "s@example.com", "smtp_port": "smtp"}}],
            "routes": [{"groups": ["docs"], "channels": ["mail"]}],
        }
    )
    with pytest.raises(ValueError, match=r"^channel 'mail': settings.smtp_port is not a port number"):
        check_channels(mail, Secrets(None, environ={}))
    with pytest.raises(ValueError, match=r"^channel 'audit': secret 'audit-key' not found"):
        check_channels(webhook_routing(), Secrets(None, environ={}))


def test_the_notifier_spec_refuses_a_malformed_channel_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    from signoff.notifier.service import notifier_spec
    from signoff.notifier.settings import NotifierSettings

    monkeypatch.setenv("SIGNOFF_CHANNEL_SECRET_AUDIT_KEY", "whsec_%%%")
    monkeypatch.setenv("SIGNOFF_CHANNEL_SECRET_SLACK_HOOK", "https://hooks.slack.com/services/T/B/XyZzY")
    with pytest.raises(ValueError, match=r"^channel 'audit': .*malformed whsec_ key"):
        notifier_spec(NotifierSettings(), routing=webhook_routing())
