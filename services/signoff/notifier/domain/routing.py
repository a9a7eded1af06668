"""Which channels a notification goes to: the routing file, and the deliveries it plans for one event.

Format (YAML; every problem is reported with its path, e.g. `routes[0].channels[1]: unknown channel 'x'`):

```yaml
channels:                       # every place a notification can go; names are unique
  - name: sre-slack             # letters, digits, '_', '-', '.'; used in routes and in delivery rows
    type: slack                 # slack | teams | email | webhook
    secret_ref: slack-sre-hook  # name of the secret holding the incoming-webhook URL (never the URL itself)
  - name: release-slack         # Slack bot mode: Approve / Reject buttons, the message updated in place
    type: slack
    settings:
      channel: C0123ABCD        # the Slack channel id the bot posts to (the bot must be a member)
      # api_url: https://slack.com/api/   # optional: Slack's Web API base URL
    secret_ref: slack-bot-token # the bot token (xoxb-...)
  - name: release-teams
    type: teams
    secret_ref: teams-release-hook
  - name: dev-log               # type log: the text message in the notifier's log (and settings.path, a file)
    type: log
  - name: approvers-mail
    type: email
    settings:                   # plain, non-secret settings (strings, numbers, booleans)
      from: signoff@example.com # required for e-mail: the From address
      smtp_host: smtp.example.com
      smtp_port: 587
      # to: release@example.com # optional: a fixed list (comma-separated) instead of the approvers' addresses
    secret_ref: smtp-password   # optional: the SMTP password
  - name: audit-hook
    type: webhook
    settings:
      url: https://audit.example.com/signoff   # required for webhooks
    secret_ref: audit-hmac-key  # the HMAC signing key (required for webhooks: deliveries are signed)
routes:                         # user group -> channel names; '*' matches every approver
  - groups: [sre, docs]
    channels: [sre-slack, approvers-mail]
  - groups: ["*"]
    channels: [audit-hook]
reminders:                      # optional: remind the same recipients this long before expiry
  before_expiry: [1h, 10m]
escalation:                     # optional: tell another group while the gate is still pending
  after: 2h                     # after the gate opened
  to_group: release-managers    # routed like any group
```

Slack and Teams incoming webhooks address a channel, a webhook is one endpoint and a log is one file: they get
one delivery per event x channel (`recipient` is the channel name). E-mail gets one delivery per approver address
(one per event when `settings.to` fixes the addresses).
The idempotency key of a delivery is a stable hash of (event id, channel, recipient[, purpose]).

No I/O here: the service reads the routing file once at start-up and hands its YAML to `Routing.from_mapping`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from signoff.catalog.yamldoc import (
    DocumentError,
    Issue,
    join_path,
    validate_document,
)
from signoff.contracts.base import parse_utc
from signoff.contracts.durations import parse_positive_duration
from signoff.contracts.events import EligibleApprover
from signoff.notifier.domain.view import NotificationView

ChannelType = Literal["slack", "teams", "email", "webhook", "log"]
PER_CHANNEL_TYPES: frozenset[str] = frozenset({"slack", "teams", "webhook", "log"})
"""Channel types that get one delivery per event, not one per approver."""

ANY_GROUP = "*"


def _duration(text: str) -> str:
    parse_positive_duration(text)
    return text.strip()


Duration = Annotated[str, AfterValidator(_duration)]
ChannelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
GroupName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^(\*|[^\s/]+)$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Channel(_Model):
    """A place notifications go: a Slack or Teams incoming webhook, an SMTP sender, or a signed webhook."""

    name: ChannelName
    type: ChannelType
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)
    secret_ref: str | None = Field(None, min_length=1, max_length=253)

    def send_timeout(self, default: float) -> float:
        """Seconds one send may take: `settings.timeout_seconds`, else `default` (SIGNOFF_CHANNEL_TIMEOUT_SECONDS)."""
        return float(self.settings.get("timeout_seconds", default))

    def send_concurrency(self, default: int) -> int:
        """Sends in flight at once: `settings.concurrency`, else `default` (SIGNOFF_CHANNEL_CONCURRENCY)."""
        return int(self.settings.get("concurrency", default))

    @model_validator(mode="after")
    def _check(self) -> Channel:
        if self.type in ("slack", "teams") and not self.secret_ref:
            raise ValueError(
                f"a {self.type} channel needs secret_ref: the secret holding its incoming-webhook URL"
                + (" (or, with settings.channel, its bot token)" if self.type == "slack" else "")
            )
        if self.type == "slack" and "channel" in self.settings:
            if not isinstance(self.settings["channel"], str) or not self.settings["channel"].strip():
                raise ValueError("settings.channel of a slack channel is a Slack channel id (e.g. C0123ABCD)")
            api_url = self.settings.get("api_url", "https://slack.com/api/")
            if not isinstance(api_url, str) or not api_url.startswith(("http://", "https://")):
                raise ValueError("settings.api_url of a slack channel must be an http(s) URL")
        if self.type == "email" and not isinstance(self.settings.get("from"), str):
            raise ValueError("an email channel needs settings.from (the From address)")
        if self.type == "webhook":
            url = self.settings.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError("a webhook channel needs settings.url (an http(s) URL)")
            if not self.secret_ref:
                raise ValueError("a webhook channel needs secret_ref: the secret holding its HMAC signing key")
        # Checked here, not where the dispatcher starts: a timeout of "10s" or a concurrency of 0 would otherwise
        # stop the role after start, or leave the channel's deliveries waiting with no slot to send them.
        timeout = self.settings.get("timeout_seconds")
        if timeout is not None and (isinstance(timeout, bool | str) or timeout <= 0):
            raise ValueError("settings.timeout_seconds is the timeout of one send: a number of seconds above 0")
        concurrency = self.settings.get("concurrency")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1000
        ):
            raise ValueError("settings.concurrency is the sends in flight at once: a whole number from 1 to 1000")
        for key in ("webhook_url", "password", "token", "secret"):
            if key in self.settings:
                raise ValueError(f"settings.{key} looks like a secret: name it with secret_ref instead")
        return self


def slack_bot(channel: Channel) -> bool:
    """A Slack channel in bot mode (`settings.channel` set): posts with `chat.postMessage` under a bot token, with
    Approve / Reject buttons, and updates its message as the gate moves on (docs/notifications.md)."""
    return channel.type == "slack" and "channel" in channel.settings


class Route(_Model):
    """User groups -> channel names."""

    groups: list[GroupName] = Field(min_length=1)
    channels: list[ChannelName] = Field(min_length=1)


class Reminders(_Model):
    """Reminders before a pending gate expires."""

    before_expiry: list[Duration] = Field(default_factory=list)


class Escalation(_Model):
    """Tell a second group when the gate is still pending some time after it opened."""

    after: Duration
    to_group: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s/*]+$")]


class RoutingDocument(_Model):
    """The routing file as written."""

    channels: list[Channel] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    reminders: Reminders | None = None
    escalation: Escalation | None = None


class RoutingError(DocumentError):
    """A routing file is unreadable or invalid; `issues` lists every problem by path."""

    kind = "routing"


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """One message to send: the channel, who it is for (an e-mail address, or the channel name for per-channel
    types) and the idempotency key of the delivery row."""

    channel: str
    channel_type: ChannelType
    recipient: str
    idempotency_key: str
    event_id: str
    purpose: str = ""


def idempotency_key(event_id: str, channel: str, recipient: str, purpose: str = "") -> str:
    """Stable hex SHA-256 of (event id, channel, recipient[, purpose]); fields are length-prefixed so no two
    different tuples collide by concatenation."""
    parts = [event_id, channel, recipient] + ([purpose] if purpose else [])
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        digest.update(f"{len(encoded)}:".encode() + encoded)
    return digest.hexdigest()


class Routing:
    """A loaded, cross-checked routing file. Immutable."""

    def __init__(self, document: RoutingDocument, source: str = "<routing>") -> None:
        """Index `document`; raises `RoutingError` for duplicate channel names and unknown channel references."""
        self.document = document
        self.source = source
        issues: list[Issue] = []
        self._channels: dict[str, Channel] = {}
        for i, channel in enumerate(document.channels):
            if channel.name in self._channels:
                issues.append(Issue(join_path("channels", i, "name"), f"duplicate channel name {channel.name!r}"))
            self._channels[channel.name] = channel
        for i, route in enumerate(document.routes):
            for j, name in enumerate(route.channels):
                if name not in self._channels:
                    issues.append(Issue(join_path("routes", i, "channels", j), f"unknown channel {name!r}"))
        if issues:
            raise RoutingError(source, issues)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<routing>") -> Routing:
        """Build from parsed YAML/JSON; raises `RoutingError` naming every bad path."""
        expected = "expected a mapping with channels and routes"
        return cls(validate_document(RoutingDocument, data, source, RoutingError, expected), source)

    @property
    def channels(self) -> Mapping[str, Channel]:
        """Channels by name."""
        return dict(self._channels)

    def channels_for_groups(self, groups: Iterable[str]) -> list[Channel]:
        """Channels routed to any of `groups` (the `*` routes always), in file order, each once."""
        wanted = set(groups) | {ANY_GROUP}
        names: list[str] = []
        for route in self.document.routes:
            if wanted & set(route.groups):
                names += [name for name in route.channels if name not in names]
        return [self._channels[name] for name in names]

    def deliveries_for(
        self,
        view: NotificationView,
        eligible_approvers: Sequence[EligibleApprover],
        *,
        groups: Iterable[str] | None = None,
        purpose: str = "",
    ) -> list[PlannedDelivery]:
        """One delivery per event x channel x recipient, sorted by (channel, recipient).

        An approver reaches the channels routed to their groups (and the `*` routes). Slack, Teams and webhook
        channels get one delivery per channel; e-mail channels one per distinct approver address (approvers without
        an address are skipped). `groups`, when given, replaces the approvers' groups for choosing channels
        (escalation: the escalation group's channels, with its members as `eligible_approvers`). `purpose` (e.g.
        `reminder:1h`, `escalation`) separates these deliveries' keys from the first notification's.
        """
        planned: dict[tuple[str, str], PlannedDelivery] = {}

        def add(channel: Channel, recipient: str) -> None:
            if (channel.name, recipient) in planned:
                return
            key = idempotency_key(view.event_id, channel.name, recipient, purpose)
            planned[(channel.name, recipient)] = PlannedDelivery(
                channel=channel.name,
                channel_type=channel.type,
                recipient=recipient,
                idempotency_key=key,
                event_id=view.event_id,
                purpose=purpose,
            )

        if groups is not None:
            group_list = list(groups)
            for channel in self.channels_for_groups(group_list):
                if channel.type in PER_CHANNEL_TYPES:
                    add(channel, channel.name)
                elif fixed_to(channel):
                    add(channel, fixed_to(channel))
                else:
                    for approver in eligible_approvers:
                        if approver.email:
                            add(channel, approver.email.lower())
        else:
            for approver in eligible_approvers:
                for channel in self.channels_for_groups(approver.groups):
                    if channel.type in PER_CHANNEL_TYPES:
                        add(channel, channel.name)
                    elif fixed_to(channel):
                        add(channel, fixed_to(channel))
                    elif approver.email:
                        add(channel, approver.email.lower())
        return [planned[key] for key in sorted(planned)]

    def reminder_times(self, opened_at: datetime, expires_at: datetime, now: datetime) -> list[tuple[str, datetime]]:
        """`(purpose, when)` of the reminders still to send: `before_expiry` spans before `expires_at`, later than
        both `opened_at` and `now`, earliest first."""
        if self.document.reminders is None:
            return []
        opened, expires, current = parse_utc(opened_at), parse_utc(expires_at), parse_utc(now)
        out = []
        for text in self.document.reminders.before_expiry:
            when = expires - parse_positive_duration(text)
            if when > opened and when > current:
                out.append((f"reminder:{text}", when))
        return sorted(set(out), key=lambda item: (item[1], item[0]))

    def escalation_time(self, opened_at: datetime, expires_at: datetime) -> tuple[str, datetime] | None:
        """`(group, when)` of the escalation, or None when none is configured or it would come after expiry."""
        escalation = self.document.escalation
        if escalation is None:
            return None
        when = parse_utc(opened_at) + parse_positive_duration(escalation.after)
        if when >= parse_utc(expires_at):
            return None
        return escalation.to_group, when


def fixed_to(channel: Channel) -> str:
    """The fixed address list of an e-mail channel with `settings.to` (a mailing list: one delivery per event,
    whoever the approvers are), lower-cased; `` for the other channels."""
    to = channel.settings.get("to") if channel.type == "email" else None
    return ", ".join(part.strip().lower() for part in to.split(",") if part.strip()) if isinstance(to, str) else ""
