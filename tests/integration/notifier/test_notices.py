"""Outcome notices go to the recipients of the request; reminders before expiry and the escalation to a second
group come at their time on the injected clock; a closed gate gets no more reminders."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signoff import contracts as wire
from signoff.runtime.clock import FixedClock
from tests.integration.notifier.conftest import NotifierHarness, gate_opened
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def outcome(opened: wire.GateOpened, kind: str) -> wire.EventData:
    base = {"gate_id": opened.gate_id, "key": opened.key.model_dump(mode="json")}
    at = "2025-03-04T10:30:00Z"
    if kind == "approved":
        vote = {"decision_id": "d1", "source": "cli", "approver": "bob", "status": "Approved", "decided_at": at}
        return wire.GateApproved.model_validate(
            {**base, "cause": "approvers", "votes": [vote], "approved_at": at, "inputs": {"foo": "baz"}}
        )
    if kind == "rejected":
        return wire.GateRejected.model_validate(
            {**base, "cause": "approver", "rejected_by": "carol", "comment": "<b>not</b> today", "rejected_at": at}
        )
    if kind == "expired":
        return wire.GateExpired.model_validate({**base, "expired_at": at})
    return wire.GateCancelled.model_validate({**base, "reason": "execution aborted", "cancelled_at": at})


@pytest.mark.parametrize("kind", ["approved", "rejected", "expired", "cancelled"])
async def test_outcomes_are_told_to_the_same_recipients(notifier: NotifierHarness, kind: str) -> None:
    await notifier.start()
    opened = gate_opened()
    await notifier.publish(opened)
    await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=5, what="request sent")
    await notifier.publish(outcome(opened, kind))
    rows = await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=10, what="outcome")
    first = sorted((r["channel"], r["recipient"]) for r in rows if r["kind"] == "opened")
    told = sorted((r["channel"], r["recipient"]) for r in rows if r["kind"] == kind)
    assert told == first and len(told) == 5
    headline = f"{kind.capitalize()}: Payments release / Deploy to staging"
    subjects = [m["Subject"].strip() for m in notifier.mail.messages]  # a long Subject is folded
    assert subjects.count(headline + " / Harness Approval Step") == 2, subjects
    hooks = [h.headers["ce-type"] for h in notifier.http.hits["hook"]]
    assert hooks == [wire.GateOpened.event_type, f"io.signoff.gate.{kind}.v1"]
    slack = notifier.http.hits["slack"][-1].json()
    assert slack["blocks"][0]["text"]["text"].startswith(kind.capitalize())
    if kind == "rejected":  # the approver's comment is user content: escaped
        html = notifier.mail.messages[-1].get_body(("html",)).get_content()
        assert "&lt;b&gt;not&lt;/b&gt; today" in html and "<b>not</b>" not in html


async def test_reminders_and_escalation_follow_the_injected_clock(notifier: NotifierHarness) -> None:
    clock = FixedClock(gate_opened().opened_at)
    routing = notifier.routing(
        extra_channels=[
            {
                "name": "managers-mail",
                "type": "email",
                "settings": {
                    "from": "signoff@example.com",
                    "to": "Mia@example.com",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": notifier.smtp_port,
                },
            }
        ],
        reminders={"before_expiry": ["2h", "30m"]},
        escalation={"after": "4h", "to_group": "release_managers"},
    )
    # managers-mail (a fixed address: the managers are not approvers) is routed only to the escalation group.
    document = routing.document.model_dump()
    document["routes"] = [
        {"groups": ["docs"], "channels": ["docs-mail", "docs-slack"]},
        {"groups": ["release_managers"], "channels": ["managers-mail", "ops-webhook"]},
    ]
    routing = type(routing).from_mapping(document)
    await notifier.start(routing, clock=clock)
    opened = gate_opened()  # opened 09:30, expires the next day at 09:30; approvers bob and carol (docs)
    published = await notifier.publish(opened)
    rows = await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=3, what="request")
    assert sorted(r["recipient"] for r in rows) == ["bob@example.com", "carol@example.com", "docs-slack"]

    async def kinds() -> list[str]:
        return sorted(r["kind"] for r in await notifier.deliveries(opened.gate_id))

    # Escalation after 4h: the escalation group's channels; no reminder yet.
    clock.advance(timedelta(hours=4, minutes=1))
    rows = await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=5, what="escalation")
    escalated = sorted((r["channel"], r["recipient"]) for r in rows if r["kind"] == "escalation")
    assert escalated == [("managers-mail", "mia@example.com"), ("ops-webhook", "ops-webhook")]
    assert await kinds() == ["escalation"] * 2 + ["opened"] * 3
    mia = [m for m in notifier.mail.messages if m["To"] == "mia@example.com"]
    assert len(mia) == 1 and mia[0]["Subject"].strip().startswith("Escalated to release_managers")

    # 2h before expiry (next day 07:30): the first reminder to the request's recipients, with the time left.
    clock.advance(timedelta(hours=18))
    rows = await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=8, what="reminder")
    reminders = [r for r in rows if r["kind"] == "reminder"]
    assert sorted(r["recipient"] for r in reminders) == ["bob@example.com", "carol@example.com", "docs-slack"]
    assert {r["purpose"] for r in reminders} == {"reminder:2h"}
    bob = [m for m in notifier.mail.messages if m["To"] == "bob@example.com"]
    assert bob[-1]["Subject"].strip().startswith("Reminder: approval needed")
    assert "1h 59m left" in bob[-1].get_body(("plain",)).get_content()
    # Every notice so far, the escalation and the reminder planned later by the reminder loop included, carries the
    # gate event's traceparent (tracing off: forwarded as it came), in its HTTP request or its e-mail header.
    sent_traceparents = {hit.headers.get("traceparent") for hits in notifier.http.hits.values() for hit in hits}
    sent_traceparents |= {message["traceparent"] for message in notifier.mail.messages}
    assert sent_traceparents == {published.traceparent}

    # Approved now: the 30m reminder is cancelled, the outcome told.
    await notifier.publish(outcome(opened, "approved"))
    await notifier.wait_deliveries(opened.gate_id, lambda r: r["status"] == "sent", count=11, what="outcome")
    clock.advance(timedelta(hours=2))

    async def schedule_closed():
        async with notifier.pool.acquire() as conn:
            rows = await conn.fetch("SELECT purpose, status FROM notifier.schedule WHERE gate_id = $1", opened.gate_id)
        states = {r["purpose"]: r["status"] for r in rows}
        return states if states.get("reminder:30m") == "cancelled" else None

    states = await eventually(schedule_closed, what="the 30m reminder cancelled")
    assert states == {"escalation:release_managers": "done", "reminder:2h": "done", "reminder:30m": "cancelled"}
    assert (await kinds()).count("reminder") == 3


async def test_a_refused_request_is_told_to_the_pipelines_triggerer(notifier: NotifierHarness) -> None:
    """No gate opened, so no approver was told: the triggerer learns why, on the `*` routes' channels."""
    from signoff.notifier.domain import Routing

    (notifier.secrets / "slack-url").write_text(f"{notifier.http.url}/slack\n")
    routing = Routing.from_mapping(
        {
            "channels": [
                {"name": "all-slack", "type": "slack", "secret_ref": "slack-url"},
                {
                    "name": "all-mail",
                    "type": "email",
                    "settings": {
                        "from": "signoff@example.com",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": notifier.smtp_port,
                    },
                },
            ],
            "routes": [{"groups": ["*"], "channels": ["all-slack", "all-mail"]}],
        }
    )
    await notifier.start(routing)
    refused = wire.RequestRefused.model_validate(
        {
            "key": {"pipeline_id": "p", "execution_id": "e-refused", "stage_id": "s", "step_id": "approve"},
            "reasons": {"policy.user_groups": "unknown user group 'dosc'"},
            "triggered_by": {"user": "alice", "name": "Alice", "email": "Alice@example.com"},
            "pipeline_name": "Payments release",
            "step_name": "Approve",
            "refused_at": "2025-03-04T10:00:00Z",
        }
    )
    await notifier.publish(refused)
    rows = await notifier.wait_deliveries(
        "p/e-refused/s/approve/1", lambda r: r["status"] == "sent", count=2, what="the triggerer told"
    )
    assert {(r["channel"], r["recipient"], r["kind"]) for r in rows} == {
        ("all-slack", "all-slack", "refused"),
        ("all-mail", "alice@example.com", "refused"),
    }
    (message,) = [m for m in notifier.mail.messages if "alice@example.com" in m["X-Envelope-To"]]
    assert "Approval request refused: Payments release" in message["Subject"]
    assert "policy.user_groups: unknown user group 'dosc'" in message.get_body(("plain",)).get_content()
