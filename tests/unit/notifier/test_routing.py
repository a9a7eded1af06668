"""Routing: the file format with path-named errors, fan-out per channel type, stable idempotency keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from signoff.contracts.events import EligibleApprover, GateRejected
from signoff.notifier.domain import ApprovalView, OutcomeView, Routing, RoutingError, idempotency_key
from signoff.notifier.service import read_routing

from .builders import NOW, PAGE, catalog, example_data, opened

ROUTING = """
channels:
  - name: sre-slack
    type: slack
    secret_ref: slack-sre-hook
  - name: release-teams
    type: teams
    secret_ref: teams-release-hook
  - name: approvers-mail
    type: email
    settings: {from: signoff@example.com, smtp_host: smtp.example.com, smtp_port: 587}
    secret_ref: smtp-password
  - name: audit-hook
    type: webhook
    settings: {url: "https://audit.example.com/signoff"}
    secret_ref: audit-hmac-key
routes:
  - groups: [docs]
    channels: [sre-slack, approvers-mail]
  - groups: [sre]
    channels: [release-teams, approvers-mail]
  - groups: ["*"]
    channels: [audit-hook]
reminders:
  before_expiry: [1h, 10m]
escalation:
  after: 2h
  to_group: release-managers
"""


@pytest.fixture
def routing(tmp_path: Path) -> Routing:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return read_routing(path)


@pytest.fixture(scope="module")
def view() -> ApprovalView:
    return ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)


APPROVERS = [
    EligibleApprover(user="bob", email="bob@example.com", groups=["docs"]),
    EligibleApprover(user="carol", email="Carol@example.com", groups=["docs", "sre"]),
    EligibleApprover(user="dave", groups=["sre"]),  # no e-mail: chat channels only
    EligibleApprover(user="erin", email="erin@example.com"),  # listed as a user: '*' routes only
]


def test_fan_out_one_per_channel_for_chat_and_webhooks_one_per_address_for_email(routing: Routing, view) -> None:
    planned = routing.deliveries_for(view, APPROVERS)
    assert [(d.channel, d.channel_type, d.recipient) for d in planned] == [
        ("approvers-mail", "email", "bob@example.com"),
        ("approvers-mail", "email", "carol@example.com"),
        ("audit-hook", "webhook", "audit-hook"),
        ("release-teams", "teams", "release-teams"),
        ("sre-slack", "slack", "sre-slack"),
    ]
    assert len({d.idempotency_key for d in planned}) == len(planned)
    assert all(d.event_id == view.event_id for d in planned)


def test_idempotency_keys_are_stable_and_depend_on_event_channel_recipient(routing: Routing, view) -> None:
    first = routing.deliveries_for(view, APPROVERS)
    again = routing.deliveries_for(view, list(reversed(APPROVERS)))
    assert first == again
    key = idempotency_key(view.event_id, "sre-slack", "sre-slack")
    assert key == next(d.idempotency_key for d in first if d.channel == "sre-slack")
    assert key == idempotency_key("io.signoff.gate.opened.v1/gate-5d0c6f0e", "sre-slack", "sre-slack")
    assert len(key) == 64
    assert idempotency_key("a", "bc", "d") != idempotency_key("ab", "c", "d")
    reminder = routing.deliveries_for(view, APPROVERS, purpose="reminder:1h")
    assert {d.idempotency_key for d in reminder}.isdisjoint({d.idempotency_key for d in first})


def test_outcomes_reach_the_same_recipients_under_their_own_keys(routing: Routing, view) -> None:
    outcome = OutcomeView.from_event(
        GateRejected.model_validate(example_data("io.signoff.gate.rejected.v1")), approval_page_url=PAGE
    )
    told = routing.deliveries_for(outcome, APPROVERS)
    asked = routing.deliveries_for(view, APPROVERS)
    assert [(d.channel, d.recipient) for d in told] == [(d.channel, d.recipient) for d in asked]
    assert {d.idempotency_key for d in told}.isdisjoint({d.idempotency_key for d in asked})


def test_escalation_routes_the_escalation_group(routing: Routing, view) -> None:
    group, when = routing.escalation_time(view_opened(), view_expires())
    assert group == "release-managers" and when == view_opened() + timedelta(hours=2)
    managers = [EligibleApprover(user="mia", email="mia@example.com")]
    planned = routing.deliveries_for(view, managers, groups=[group], purpose="escalation")
    assert [(d.channel, d.recipient) for d in planned] == [("audit-hook", "audit-hook")]


def test_reminders_before_expiry_still_ahead(routing: Routing) -> None:
    expires = view_expires()
    assert routing.reminder_times(view_opened(), expires, NOW) == [
        ("reminder:1h", expires - timedelta(hours=1)),
        ("reminder:10m", expires - timedelta(minutes=10)),
    ]
    late = expires - timedelta(minutes=30)
    assert routing.reminder_times(view_opened(), expires, late) == [("reminder:10m", expires - timedelta(minutes=10))]


def view_opened():
    return opened().opened_at


def view_expires():
    return opened().expires_at


def problems(data: object) -> list[str]:
    with pytest.raises(RoutingError) as caught:
        Routing.from_mapping(data, "routing.yaml")
    assert str(caught.value).startswith("routing.yaml: invalid routing")
    return [str(issue) for issue in caught.value.issues]


def test_errors_name_their_path() -> None:
    found = problems(
        {
            "channels": [
                {"name": "a", "type": "slack", "secret_ref": "x"},
                {"name": "a", "type": "email", "settings": {"from": "s@example.com"}},
            ],
            "routes": [{"groups": ["docs"], "channels": ["a", "missing"]}],
        }
    )
    assert found == ["channels[1].name: duplicate channel name 'a'", "routes[0].channels[1]: unknown channel 'missing'"]
    found = problems({"channels": [{"name": "p", "type": "pager"}], "reminders": {"before_expiry": ["soon"]}})
    assert any(issue.startswith("channels[0].type:") for issue in found)
    assert any(issue.startswith("reminders.before_expiry[0]:") and "invalid duration" in issue for issue in found)


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"name": "s", "type": "slack"}, "needs secret_ref"),
        ({"name": "m", "type": "email"}, "needs settings.from"),
        ({"name": "w", "type": "webhook", "secret_ref": "k"}, "needs settings.url"),
        ({"name": "w", "type": "webhook", "settings": {"url": "https://x.example.com"}}, "needs secret_ref"),
        ({"name": "t", "type": "teams", "secret_ref": "k", "settings": {"webhook_url": "https://x"}}, "secret_ref"),
        ({"name": "l", "type": "log", "settings": {"timeout_seconds": "10s"}}, "timeout_seconds is the timeout"),
        ({"name": "l", "type": "log", "settings": {"timeout_seconds": 0}}, "a number of seconds above 0"),
        ({"name": "l", "type": "log", "settings": {"timeout_seconds": True}}, "timeout_seconds is the timeout"),
        ({"name": "l", "type": "log", "settings": {"concurrency": 0}}, "a whole number from 1 to 1000"),
        ({"name": "l", "type": "log", "settings": {"concurrency": 2.5}}, "a whole number from 1 to 1000"),
        ({"name": "l", "type": "log", "settings": {"concurrency": "4"}}, "concurrency is the sends in flight"),
    ],
)
def test_channel_settings_are_checked(channel: dict, message: str) -> None:
    found = problems({"channels": [channel]})
    assert len(found) == 1 and found[0].startswith("channels[0]") and message in found[0]


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="cannot read"):
        read_routing(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [\n")
    with pytest.raises(RoutingError, match=r"bad\.yaml"):
        read_routing(bad)
    assert problems(["a"]) == ["(root): expected a mapping with channels and routes"]
    assert (
        Routing.from_mapping(None).deliveries_for(
            ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE), APPROVERS
        )
        == []
    )


def test_a_channels_timeout_and_concurrency_fall_back_to_the_role_defaults() -> None:
    routing = Routing.from_mapping(
        {
            "channels": [
                {"name": "tuned", "type": "log", "settings": {"timeout_seconds": 2.5, "concurrency": 3}},
                {"name": "plain", "type": "log"},
            ]
        },
        "routing.yaml",
    )
    tuned, plain = routing.channels["tuned"], routing.channels["plain"]
    assert (tuned.send_timeout(10.0), tuned.send_concurrency(8)) == (2.5, 3)
    assert (plain.send_timeout(10.0), plain.send_concurrency(8)) == (10.0, 8)
