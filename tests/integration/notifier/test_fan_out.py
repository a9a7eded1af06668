"""GateOpened -> one message on every routed channel (webhook, Slack, Teams, e-mail), with the CD metadata resolved
by name, working links, no bare expression, user content escaped per format; invalid events dead-lettered."""

from __future__ import annotations

import json
import logging
import re

import aiohttp
import pytest
import structlog

from signoff import contracts as wire
from signoff.notifier import handlers
from signoff.notifier.repository import SCHEMA
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.outbox import headers_from_json
from tests.integration.notifier.conftest import NotifierHarness, gate_opened, signature_ok
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

NAMES = (
    "Checkout API",
    "Payments worker",
    "Storefront",
    "Staging",
    "PreProduction",
    "Production EU",
    "Production US",
    "All production regions",
    "Staging cluster",
    "EKS eu-west-1",
    "EKS us-east-1",
    "namespace: shop",
    "Argo CD production EU",
    "registry.example.com/checkout",
    "1.4.2",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "CHG-1042",
)


def bare_expressions(text: str) -> list[str]:
    """`<+` occurrences (raw or escaped) that are not labelled as unresolved right before."""
    bad = []
    for match in re.finditer(r"(<|&lt;|\\<)\+", text):
        before = text[max(0, match.start() - 16) : match.start()]
        if "unresolved" not in before:
            bad.append(text[match.start() : match.start() + 40])
    return bad


def slack_text(payload: dict) -> str:
    return "\n".join(
        block["text"]["text"] if "text" in block else json.dumps(block) for block in payload["blocks"]
    ).replace("\u200b", "")


def teams_text(payload: dict) -> str:
    card = payload["attachments"][0]["content"]
    return "\n".join(block["text"] for block in card["body"])


async def test_gate_opened_reaches_every_channel_with_resolved_metadata(notifier: NotifierHarness) -> None:
    await notifier.start()
    opened = gate_opened()
    event = await notifier.publish(opened)
    rows = await notifier.wait_deliveries(
        opened.gate_id, lambda r: r["status"] == "sent", count=5, what="5 sent deliveries"
    )
    # Per-channel types once, e-mail once per approver address.
    assert sorted((r["channel"], r["recipient"]) for r in rows) == [
        ("docs-mail", "bob@example.com"),
        ("docs-mail", "carol@example.com"),
        ("docs-slack", "docs-slack"),
        ("docs-teams", "docs-teams"),
        ("ops-webhook", "ops-webhook"),
    ]
    http, mail = notifier.http, notifier.mail

    (hook,) = http.hits["hook"]
    assert signature_ok(hook)
    assert hook.headers["ce-id"] == event.id and hook.headers["ce-type"] == wire.GateOpened.event_type
    assert hook.headers["ce-subject"] == opened.gate_id and hook.headers["Idempotency-Key"]
    assert hook.json()["gate_id"] == opened.gate_id

    (slack,) = http.hits["slack"]
    (teams,) = http.hits["teams"]
    texts = {
        "slack": slack_text(slack.json()),
        "teams": teams_text(teams.json()).replace("\\", ""),
    }
    messages = mail.by_key()
    assert len(messages) == 2 and all(len(copies) == 1 for copies in messages.values())
    for copies in messages.values():
        message = copies[0]
        assert message["From"] == "signoff@example.com"
        texts[f"text {message['To']}"] = message.get_body(("plain",)).get_content()
        texts[f"html {message['To']}"] = message.get_body(("html",)).get_content()
    assert {m["To"] for c in messages.values() for m in c} == {"bob@example.com", "carol@example.com"}
    for where, text in texts.items():
        missing = [name for name in NAMES if name not in text]
        assert not missing, f"{where} lacks {missing}"
        assert "unresolved" in text and not bare_expressions(text), where
        assert "Deploy to production" in text and "1 approval from group docs" in text, where

    # Approve / reject links point at the approval page, which answers.
    approve = f"{http.url}/page/gates/{opened.gate_id}?action=approve"
    reject = f"{http.url}/page/gates/{opened.gate_id}?action=reject"
    buttons = [e["url"] for b in slack.json()["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [approve, reject]
    actions = [a["url"] for a in teams.json()["attachments"][0]["content"]["actions"]]
    assert actions == [approve, reject]
    assert approve in texts["text bob@example.com"] and reject in texts["text bob@example.com"]
    async with aiohttp.ClientSession() as session:
        for url in (approve, reject):
            async with session.get(url) as response:
                assert response.status == 200


async def test_injection_strings_arrive_escaped(notifier: NotifierHarness) -> None:
    await notifier.start()
    evil = "<script>alert(1)</script> <!channel> *bold* [x](http://evil) &amp;"
    opened = gate_opened(message=evil, custom_data={"note": evil})
    await notifier.publish(opened)
    await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=5, what="sent")

    slack = json.dumps(notifier.http.hits["slack"][0].json())
    assert "<script>" not in slack and "<!channel>" not in slack and "&amp;amp;" in slack
    assert "&lt;script&gt;" in slack and "&lt;!channel&gt;" in slack

    teams = teams_text(notifier.http.hits["teams"][0].json())
    assert "<script>" not in teams and "[x](http://evil)" not in teams
    assert "\\<script\\>" in teams and "\\[x\\](http://evil)" in teams and "\\*bold\\*" in teams

    (message, *_) = notifier.mail.messages
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&amp;amp;" in html


async def test_invalid_and_foreign_events_are_dead_lettered_with_the_reason(notifier: NotifierHarness) -> None:
    await notifier.start()
    await notifier.producer.send_and_wait(
        notifier.topic, b'{"not": "a cloudevent"', headers=[("content-type", b"application/cloudevents+json")]
    )
    foreign = wire.ExecutionAbortRequested.model_validate(
        {"execution_id": "exec-1", "requested_by": {"user": "alice"}, "requested_at": "2025-03-04T10:00:00Z"}
    )
    await notifier.publish(foreign)
    opened = gate_opened()
    await notifier.publish(opened)
    # The valid event after them is still notified.
    await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=5, what="sent")

    async def dead_letters():
        async with notifier.pool.acquire() as conn:
            rows = await conn.fetch(f'SELECT headers FROM "{SCHEMA}".outbox WHERE type = $1', "dead-letter")  # noqa: S608
        reasons = sorted(
            value.decode()
            for row in rows
            for name, value in headers_from_json(row["headers"])
            if name == "signoff-dlq-reason"
        )
        return reasons if len(reasons) >= 2 else None

    assert await eventually(dead_letters, what="2 dead letters") == ["handler_error", "malformed_json"]


async def test_gates_planned_in_one_batch_are_logged_in_one_line(notifier: NotifierHarness, monkeypatch) -> None:
    captured = structlog.testing.LogCapture()
    wrapper = structlog.make_filtering_bound_logger(logging.INFO)
    monkeypatch.setattr(handlers, "log", structlog.wrap_logger(None, processors=[captured], wrapper_class=wrapper))
    gates = [gate_opened() for _ in range(5)]
    settings = notifier.settings()
    await ensure_topics(settings.model_copy(update={"kafka_topic_partitions": 1}), [notifier.topic])
    producer = make_producer(settings, "test-producer")
    await producer.start()
    try:  # on the topic before the notifier starts: they come in one fetch
        for opened in gates:
            event = wire.new_event(opened, source="urn:signoff:approval")
            value, headers = wire.encode(event)
            await producer.send_and_wait(notifier.topic, value, key=wire.message_key(event), headers=headers)
    finally:
        await producer.stop()
    await notifier.start()
    await notifier.wait_deliveries(None, lambda row: True, count=5, what="deliveries of every gate planned")

    planned = [e for e in captured.entries if e["event"] == "gate_opened_planned"]
    assert sum(e["gates"] for e in planned) == 5
    assert sorted(g for e in planned for g in e["gate_ids"]) == sorted(g.gate_id for g in gates)
    assert len(planned) < 5
