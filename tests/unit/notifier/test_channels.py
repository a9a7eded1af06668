"""Channel secrets, fixed-address e-mail routing, the log rendering and the e-mail MIME message (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signoff.notifier.channels import (
    HttpTransport,
    Outgoing,
    SecretMissing,
    Secrets,
    SmtpTransport,
    _http_error,
    retry_after,
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
    transport = HttpTransport(None, "https://hooks.example.com", signing_key="webhook-signing-key")  # type: ignore[arg-type]
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
