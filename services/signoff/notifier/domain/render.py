"""Renderers: one notification view -> one message per channel type, each escaping user content for its format.

- Slack (Block Kit for an incoming webhook): text is `mrkdwn`; `&`, `<` and `>` become `&amp;`, `&lt;`, `&gt;`
  (Slack's escaping rules), so `<!channel>` or `<http://evil|x>` in a message stays text. Slack has no escape for
  `*`, `_`, `~` and `` ` ``; a zero-width space is put after each, so `*bold*` shows its asterisks instead of
  formatting. Link labels also lose `|`.
- Microsoft Teams (incoming webhook, one Adaptive Card 1.5): TextBlock text is the Adaptive Card markdown subset
  (bold, italic, lists, links); the characters that can start one of those, and `<`, `>`, `&` (some hosts render
  HTML), are backslash-escaped (CommonMark escapes, honoured by Teams desktop, web and, since 2023, mobile), so
  `[x](http://evil)`, `*bold*`, `<script>` and `&amp;` show literally. List and heading markers at a line start
  are escaped too.
- E-mail: subject (one line), text/plain and text/html; HTML uses `html.escape` on every value (attributes too).
- Log (the development channel): the e-mail's text body, unescaped plain text for a log line or file.
- Webhook: the CloudEvent data as JSON, with CloudEvents HTTP binary-mode headers (`ce-id`, `ce-type`, ...).
  Signing (the HMAC header) is the transport's job: it holds the secret.

Output is deterministic: the same view gives byte-identical messages (`to_json` sorts keys).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from signoff.notifier.domain.view import (
    ApprovalView,
    Item,
    NotificationView,
    OutcomeView,
    StageView,
    data_with_notification,
)

ChannelType = Literal["slack", "teams", "email", "webhook", "log"]

SLACK_TEXT_LIMIT = 3000
"""Slack's limit for a section block's text; longer sections are split into several blocks."""

SLACK_MAX_BLOCKS = 50
"""Slack's limit of blocks per message; further sections are replaced by a link to the gate page."""
TEAMS_MAX_BYTES = 24 * 1024
"""Budget of a Teams payload, UTF-8 JSON (Teams incoming webhooks refuse messages of about 28 KB)."""
TEAMS_TEXT_LIMIT = 4000
"""Longest TextBlock kept whole; a longer one is cut (never inside an escape) and marked."""

MESSAGE_LIMIT = 2900
"""The approval message is cut to this many characters in chat channels (the gate page has it all)."""


# ---------------------------------------------------------------------------------------------------------------------
# A channel-neutral document: sections of lines of spans


@dataclass(frozen=True, slots=True)
class Text:
    """Plain user or system text; escaped by every renderer."""

    value: str


@dataclass(frozen=True, slots=True)
class Strong:
    """Emphasised text."""

    value: str


@dataclass(frozen=True, slots=True)
class Href:
    """A link: `label` is escaped, `url` is a catalog or signoff URL (already validated as http(s))."""

    label: str
    url: str


Span = Text | Strong | Href
Line = tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Section:
    """A titled group of lines."""

    title: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Document:
    """What every channel shows: a title, sections and action links (label, url, style)."""

    title: str
    summary: str
    sections: tuple[Section, ...]
    actions: tuple[tuple[str, str, str], ...]


def _item_spans(item: Item) -> list[Span]:
    if not item.resolved:
        return [Text(item.display())]
    spans: list[Span] = [Strong(item.text)]
    if item.details:
        spans.append(Text(f" ({item.details_text()})"))
    for link in item.links:
        spans += [Text(" "), Href(link.name, link.url)]
    return spans


def _stage_lines(stage: StageView) -> tuple[Line, ...]:
    lines: list[Line] = []
    for service in stage.services:
        lines.append((Text("Service: "), *_item_spans(service)))
    if stage.environment_group is not None:
        lines.append((Text("Environment group: "), *_item_spans(stage.environment_group)))
    if stage.environment_filter is not None:
        lines.append((Text("Environments by filter: "), Text(stage.environment_filter.display())))
    for env in stage.environments:
        env_type = f" [{env.type}]" if env.type else " [type unknown]"
        item = env.environment
        spans = [Text(item.display()), Text(env_type)] if not item.resolved else [Strong(item.text), Text(env_type)]
        for link in item.links:
            spans += [Text(" "), Href(link.name, link.url)]
        lines.append((Text("Environment: "), *spans))
        if env.infrastructure_filter is not None:
            lines.append((Text("  Infrastructures by filter: "), Text(env.infrastructure_filter.display())))
        if env.gitops_cluster_filter is not None:
            lines.append((Text("  GitOps clusters by filter: "), Text(env.gitops_cluster_filter.display())))
        for infra in env.infrastructures:
            lines.append((Text("  Infrastructure: "), *_item_spans(infra)))
        for cluster in env.gitops_clusters:
            lines.append((Text("  GitOps cluster: "), *_item_spans(cluster)))
    for artifact in stage.artifacts:
        owner = f" (service {artifact.service.display()})" if artifact.service is not None else ""
        lines.append((Text("Artifact: "), Text(artifact.display() + owner)))
    for key, value in stage.custom_metadata:
        lines.append((Text(f"{key}: "), Text(value.display())))
    if not lines:
        lines.append((Text("no CD metadata"),))
    return tuple(lines)


def document(view: NotificationView) -> Document:
    """The channel-neutral content of a notification."""
    if isinstance(view, OutcomeView):
        lines: list[Line] = [(Text(detail),) for detail in view.details]
        lines += [(Text("Vote: "), Text(vote)) for vote in view.votes]
        lines.append((Text(f"At {view.at} "), Href("Gate", view.gate_url)))
        return Document(
            title=view.headline,
            summary=view.headline,
            sections=(Section("Outcome", tuple(lines)),),
            actions=(),
        )
    sections: list[Section] = []
    gate: list[Line] = [
        (Text("Pipeline: "), Strong(view.pipeline_name), Text(f" (execution {view.execution_id})")),
        (Text("Step: "), Text(f"{view.stage_name} / {view.step_name}")),
        (Text("Triggered by: "), Text(view.triggered_by)),
        (Text("Expires: "), Strong(view.time_left), Text(f" ({view.expires_at})")),
    ]
    if view.review_url:
        gate.append((Text("Review: "), Href("content to review", view.review_url)))
    sections.append(Section("Approval", tuple(gate)))
    if view.message:
        message = view.message if len(view.message) <= MESSAGE_LIMIT else view.message[:MESSAGE_LIMIT] + " [...]"
        sections.append(Section("Message", tuple((Text(line),) for line in message.splitlines() or [""])))
    for stage in view.stages:
        label = "Current stage" if stage.position == "current" else "Upcoming stage"
        sections.append(Section(f"{label}: {stage.name} ({stage.type})", _stage_lines(stage)))
    policy: list[Line] = [(Text(rule),) for rule in view.policy.rules]
    policy += [(Text(constraint),) for constraint in view.policy.constraints]
    sections.append(Section("Who may approve", tuple(policy)))
    if view.approver_inputs:
        inputs = tuple((Strong(name), Text(f" ({text})")) for name, text in view.approver_inputs)
        sections.append(Section("Approver inputs", inputs))
    if view.custom_data:
        sections.append(Section("Custom data", tuple((Text(f"{k}: "), Text(v.display())) for k, v in view.custom_data)))
    if view.history:
        sections.append(Section("Execution history", tuple((Text(line.display()),) for line in view.history)))
    title = f"{view.headline}: {view.pipeline_name} / {view.stage_name}"
    return Document(
        title=title,
        summary=f"{title} ({view.time_left})",
        sections=tuple(sections),
        actions=(("Approve", view.approve_url, "primary"), ("Reject", view.reject_url, "danger")),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Escaping

_ZWSP = "\u200b"


_SLACK_MARKUP = re.compile(r"(?<![A-Za-z0-9])[*_~`]|[*_~`](?![A-Za-z0-9])")


def slack_escape(text: str) -> str:
    """Escape for Slack mrkdwn: `&`, `<`, `>` as entities (Slack's rules); a formatting character (`*_~` and
    backquote) at a word boundary, where Slack would format, is wrapped in zero-width spaces (best effort: Slack
    has no escape for them). `payments_api` stays as it is."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SLACK_MARKUP.sub(lambda match: f"{_ZWSP}{match.group(0)}{_ZWSP}", text)


def _slack_plain(text: str, limit: int = 150) -> str:
    # plain_text fields are not parsed for mentions or links, but Slack decodes entities everywhere: escape
    # `&`, `<`, `>` anyway, so no field of the payload carries a live `<!channel>`. Escape first, then cut: Slack's
    # limit counts the text as sent, and an escaped `&` is five characters (a title full of them would otherwise
    # grow past the limit and the whole message be refused); the cut never splits an entity.
    escaped = _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _slack_cut(escaped, limit)


def _slack_cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters without leaving half an entity (`&am`) or half a link (`<http...`)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    for opener, closer in (("<", ">"), ("&", ";")):
        start = cut.rfind(opener)
        if start > cut.rfind(closer):
            cut = cut[:start]
    return cut


def _slack_url(url: str) -> str:
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")


_MARKDOWN_SPECIALS = frozenset("\\`*_[]<>&")
_LINE_START = re.compile(r"^(\s*)(#|-|\+|>|=|\d+(?=[.)]))")


def teams_escape(text: str) -> str:
    """Escape for Teams (Adaptive Card) markdown: backslash before every markdown-significant punctuation mark
    (and before a heading, list or quote marker at a line start); line breaks become markdown paragraph breaks."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        escaped = "".join("\\" + char if char in _MARKDOWN_SPECIALS else char for char in line)
        match = _LINE_START.match(escaped)
        if match:
            marker = match.group(2)
            rest = escaped[match.end() :]
            if marker[0].isdigit():
                escaped = f"{match.group(1)}{marker}\\{rest}"
            else:
                escaped = f"{match.group(1)}\\{marker}{rest}"
        lines.append(escaped)
    return "\n\n".join(lines)


def _teams_cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, never after a lone escaping backslash, marked as cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut + " …"


def _teams_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_json(payload: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _spans(line: Line, text: Callable[[str], str], strong: Callable[[str], str], link: Callable[[Href], str]) -> str:
    out = []
    for span in line:
        if isinstance(span, Strong):
            # Bold cannot span a line break in mrkdwn or Teams markdown: a CR/LF in a pipeline name would leave
            # the markers unmatched and show them as text.
            out.append(strong(_one_line(span.value)))
        elif isinstance(span, Href):
            out.append(link(span))
        else:
            out.append(text(span.value))
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------------
# Slack


def _slack_line(line: Line) -> str:
    return _spans(
        line,
        slack_escape,
        lambda value: f"*{slack_escape(value)}*",
        lambda href: f"<{_slack_url(href.url)}|{slack_escape(href.label).replace('|', '¦')}>",
    )


def render_slack(view: NotificationView, *, doc: Document | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook payload: Block Kit blocks plus a fallback `text` (`doc`: the view's `document`,
    when the caller has it already)."""
    doc = doc or document(view)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _slack_plain(doc.title), "emoji": False}}
    ]
    for section in doc.sections:
        chunk = f"*{slack_escape(section.title)}*"
        for line in section.lines:
            rendered = _slack_line(line)
            if len(chunk) + 1 + len(rendered) > SLACK_TEXT_LIMIT:
                blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}})
                chunk = _slack_cut(rendered, SLACK_TEXT_LIMIT)
            else:
                chunk += "\n" + rendered
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}})
    if len(blocks) > SLACK_MAX_BLOCKS - 2:
        gate_url = view.gate_url
        blocks = blocks[: SLACK_MAX_BLOCKS - 3]
        more = f"More on <{_slack_url(gate_url)}|the gate page>."
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more, "verbatim": True}})
    if doc.actions:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": label, "emoji": False},
                        "url": url,
                        "style": style,
                        "action_id": label.lower(),
                    }
                    for label, url, style in doc.actions
                ],
            }
        )
    return {"text": slack_escape(_one_line(doc.summary)), "blocks": blocks}


# ---------------------------------------------------------------------------------------------------------------------
# Microsoft Teams


def _teams_line(line: Line) -> str:
    return _spans(
        line,
        teams_escape,
        lambda value: f"**{teams_escape(value)}**",
        lambda href: f"[{teams_escape(href.label)}]({_teams_url(href.url)})",
    )


def render_teams(view: NotificationView, *, doc: Document | None = None) -> dict[str, Any]:
    """A Teams incoming-webhook payload: one Adaptive Card (1.5) with Action.OpenUrl buttons,
    within `TEAMS_MAX_BYTES` (sections that do not fit are left to the gate page); `doc` as `render_slack`."""
    doc = doc or document(view)
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": teams_escape(_one_line(doc.title)),
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
        }
    ]
    sections: list[list[dict[str, Any]]] = []
    for section in doc.sections:
        text = "\n\n".join(_teams_line(line) for line in section.lines)
        sections.append(
            [
                {
                    "type": "TextBlock",
                    "text": teams_escape(section.title),
                    "weight": "Bolder",
                    "separator": True,
                    "wrap": True,
                },
                {"type": "TextBlock", "text": _teams_cut(text, TEAMS_TEXT_LIMIT), "wrap": True},
            ]
        )
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if doc.actions:
        card["actions"] = [
            {
                "type": "Action.OpenUrl",
                "title": label,
                "url": url,
                "style": "positive" if style == "primary" else "destructive",
            }
            for label, url, style in doc.actions
        ]
    message = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
    # Keep whole sections, in order, while the message fits the budget; the rest is on the gate page (as Slack).
    more = {"type": "TextBlock", "text": f"More on [the gate page]({_teams_url(view.gate_url)}).", "wrap": True}
    budget = TEAMS_MAX_BYTES - len(to_json(message).encode()) - len(to_json(more).encode()) - 2
    for blocks in sections:
        size = sum(len(to_json(block).encode()) + 1 for block in blocks)
        if size > budget:
            body.append(more)
            break
        budget -= size
        body.extend(blocks)
    return message


# ---------------------------------------------------------------------------------------------------------------------
# E-mail


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """An e-mail's subject and its two bodies (multipart/alternative)."""

    subject: str
    text: str
    html: str


def _text_line(line: Line) -> str:
    # The plain text shows every span as it is (a link as `label <url>`): no escaping callbacks to go through.
    return "".join(f"{span.label} <{span.url}>" if isinstance(span, Href) else span.value for span in line)


def _html_line(line: Line) -> str:
    return _spans(
        line,
        html.escape,
        lambda value: f"<strong>{html.escape(value)}</strong>",
        lambda href: f'<a href="{html.escape(href.url, quote=True)}">{html.escape(href.label)}</a>',
    )


def render_email(view: NotificationView, *, doc: Document | None = None) -> EmailMessage:
    """Subject, text/plain and text/html of the notification e-mail (`doc`: the view's `document`, when the caller
    has it already)."""
    return _email(doc or document(view))


def _email(doc: Document) -> EmailMessage:
    subject = _one_line(doc.title)[:200]
    return EmailMessage(subject=subject, text=_email_text(doc), html=_email_html(doc, subject))


def _email_text(doc: Document) -> str:
    """The text/plain body (also the webhook's `notification.text` and the log channel's line)."""
    text_parts = [doc.title, ""]
    for section in doc.sections:
        text_parts.append(section.title)
        text_parts += [f"  {_text_line(line)}" for line in section.lines]
        text_parts.append("")
    text_parts += [f"{label}: {url}" for label, url, _ in doc.actions]
    return "\n".join(text_parts).rstrip() + "\n"


def _email_html(doc: Document, subject: str) -> str:
    html_parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + html.escape(subject) + "</title></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for section in doc.sections:
        html_parts.append(f"<h2>{html.escape(section.title)}</h2>")
        html_parts.append("<ul>" + "".join(f"<li>{_html_line(line)}</li>" for line in section.lines) + "</ul>")
    if doc.actions:
        html_parts.append(
            "<p>"
            + " | ".join(
                f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>' for label, url, _ in doc.actions
            )
            + "</p>"
        )
    html_parts.append("</body></html>")
    return "\n".join(html_parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Webhook


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """A generic webhook request: the event data as JSON and CloudEvents binary-mode HTTP headers."""

    body: str
    headers: tuple[tuple[str, str], ...]


def render_webhook(
    view: NotificationView, *, source: str = "urn:signoff:approval", doc: Document | None = None
) -> WebhookMessage:
    """The CloudEvent data as deterministic JSON with `ce-*` headers (CloudEvents HTTP binding, binary mode), plus a
    `notification` member with what the people-facing channels show: the title, the plain text with every id
    resolved against the catalog (names, environment types, links), and the approve / reject links, so a webhook
    consumer needs no catalog of its own. `doc`: the view's `document`, when the caller has it already."""
    # A reminder or an escalation is a notice of its own: the same CloudEvent id would make a receiver that
    # dedupes by source and id (as CloudEvents allows) drop it as a repeat of the request.
    purpose = view.purpose if isinstance(view, ApprovalView) else None
    headers = (
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", f"{view.event_id}/{purpose}" if purpose else view.event_id),
        ("ce-source", source),
        ("ce-type", view.event_type),
        ("ce-subject", view.gate_id),
        ("ce-time", view.opened_at if isinstance(view, ApprovalView) else view.at),
    )
    doc = doc or document(view)
    notification = {
        "title": doc.title,
        "text": _email_text(doc),
        "links": {label.lower(): url for label, url, _ in doc.actions},
        **({"purpose": purpose} if purpose else {}),  # `reminder:1h`, `escalation:sre`
    }
    # The same bytes as `to_json({**view.data, "notification": notification})`, without decoding and re-encoding
    # the event's data (the larger part of the body).
    return WebhookMessage(body=data_with_notification(view, notification), headers=headers)


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready for a channel's transport: `body` and its content type; `subject` for e-mail."""

    channel_type: ChannelType
    content_type: str
    body: str
    subject: str | None = None
    alternative_html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def render(view: NotificationView, channel_type: ChannelType, *, doc: Document | None = None) -> RenderedMessage:
    """Render `view` for one channel type. `doc` is the view's `document`: pass it when rendering one view for
    several channel types, so the document is built once."""
    if channel_type == "slack":
        return RenderedMessage("slack", "application/json", to_json(render_slack(view, doc=doc)))
    if channel_type == "teams":
        return RenderedMessage("teams", "application/json", to_json(render_teams(view, doc=doc)))
    if channel_type == "email":
        mail = render_email(view, doc=doc)
        return RenderedMessage("email", "text/plain; charset=utf-8", mail.text, mail.subject, mail.html)
    if channel_type == "log":
        doc = doc or document(view)
        subject = _one_line(doc.title)[:200]
        return RenderedMessage("log", "text/plain; charset=utf-8", _email_text(doc), subject)
    if channel_type == "webhook":
        hook = render_webhook(view, doc=doc)
        return RenderedMessage("webhook", "application/json", hook.body, headers=hook.headers)
    raise ValueError(f"unknown channel type {channel_type!r}; expected slack, teams, email or webhook")
