"""Channel secrets, fixed-address e-mail routing, the log rendering and the e-mail MIME message (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.notifier.channels import Outgoing, SecretMissing, Secrets, SmtpTransport, _http_error
from signoff.notifier.domain import ApprovalView, Routing, render
from tests.unit.notifier.builders import NOW, PAGE, catalog, opened


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
    assert _http_error(404, "").permanent and _http_error(400, "").permanent
    assert not _http_error(429, "").permanent and not _http_error(503, "").permanent
    assert not _http_error(408, "").permanent


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
