"""Tracing off, a gate's events all forward the traceparent of the request that opened it, those of the expiry
loop included (the traceparent is kept with the gate)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signoff import contracts as wire
from signoff.approval.expiry import expire_due
from signoff.approval.repository import SCHEMA
from signoff.contracts.topics import CDEVENTS
from signoff.runtime import tracing
from signoff.runtime.outbox import headers_from_json
from tests.integration.approval.conftest import ApprovalHarness, request

pytestmark = pytest.mark.integration


async def _traceparents(approval: ApprovalHarness, gate_id: str) -> dict[str, str | None]:
    async with approval.pool.acquire() as conn:
        rows = await conn.fetch(
            f'SELECT payload, headers FROM "{SCHEMA}".outbox WHERE aggregatetype <> $1 ORDER BY seq',  # noqa: S608
            CDEVENTS.name,  # the CDEvents mirror the gate events: not wire events
        )
    events = [wire.decode(bytes(row["payload"]), headers_from_json(row["headers"])) for row in rows]
    return {e.type: e.traceparent for e in events if getattr(e.data, "gate_id", None) == gate_id}


async def test_the_expiry_loops_outcome_continues_the_requests_trace(approval: ApprovalHarness) -> None:
    assert not tracing.enabled()
    req = request(timeout="1h", timeout_action="fail")
    sent = await approval.send(req)
    (opened,) = await approval.wait_for(wire.GateOpened.event_type, where=lambda d: d.key == req.key)
    approval.clock.advance(timedelta(hours=1))
    assert await expire_due(approval.pool, approval.clock, links=approval.handler.links) == 1
    await approval.wait_for(wire.GateExpired.event_type, where=lambda d: d.gate_id == opened.gate_id)
    assert await _traceparents(approval, opened.gate_id) == {
        wire.GateOpened.event_type: sent.traceparent,
        wire.GateExpired.event_type: sent.traceparent,
    }
