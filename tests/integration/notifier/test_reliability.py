"""Deliveries are reliable: a flaky sink ends with every delivery sent or dead-lettered after the set tries, a sink
that never answers does not hold back the other channels, a restart mid-retry loses and duplicates nothing, and a
delivery claimed by a replica that died is sent again once its lease ends (same idempotency key)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from signoff.notifier.domain import Routing
from signoff.notifier.repository import SCHEMA, NewDelivery, NotifierRepository
from signoff.notifier.service import dev_routing
from signoff.runtime.clock import FixedClock
from tests.integration.notifier.conftest import START, NotifierHarness, gate_opened, signature_ok
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def webhook_routing(notifier: NotifierHarness, *paths: tuple[str, dict]) -> Routing:
    """One signed webhook channel per (path, extra settings), all routed to group docs."""
    channels = [
        {
            "name": path,
            "type": "webhook",
            "settings": {"url": f"{notifier.http.url}/{path}", **extra},
            "secret_ref": "hook-key",
        }
        for path, extra in paths
    ]
    return Routing.from_mapping(
        {"channels": channels, "routes": [{"groups": ["docs"], "channels": [c["name"] for c in channels]}]}
    )


async def test_a_flaky_sink_ends_with_every_delivery_sent_or_dead_lettered(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["flaky"] = "flaky"
    await notifier.start(webhook_routing(notifier, ("flaky", {})), delivery_max_attempts=3)
    gates = [gate_opened() for _ in range(16)]
    for opened in gates:
        await notifier.publish(opened)
    rows = await notifier.wait_deliveries(
        None, lambda r: r["status"] in ("sent", "dead"), count=len(gates), what="every delivery finished"
    )
    assert len(rows) == len(gates)  # one per event x channel, none duplicated
    sent = {r["idempotency_key"] for r in rows if r["status"] == "sent"}
    dead = [r for r in rows if r["status"] == "dead"]
    hits = notifier.http.hits["flaky"]
    assert all(signature_ok(hit) for hit in hits)
    assert set(notifier.http.accepted["flaky"]) == sent  # what the sink accepted is exactly what is marked sent
    for row in dead:
        assert row["attempts"] == 3 and "HTTP 503" in row["last_error"]
        assert sum(1 for h in hits if h.headers["Idempotency-Key"] == row["idempotency_key"]) == 3
    # Half of the requests fail: some deliveries needed a retry, and the retries used the same key.
    retried = [r for r in rows if r["status"] == "sent" and r["attempts"] > 1]
    assert retried and len(hits) > len(gates)


async def test_a_sink_that_never_answers_does_not_hold_back_the_others(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["stuck"] = "hang"
    routing = webhook_routing(notifier, ("stuck", {"concurrency": 1, "timeout_seconds": 100}), ("healthy", {}))
    await notifier.start(routing)
    gates = [gate_opened() for _ in range(5)]
    for opened in gates:
        await notifier.publish(opened)

    async def healthy_all_sent():
        rows = await notifier.deliveries()
        healthy = [r for r in rows if r["channel"] == "healthy"]
        return rows if len(healthy) == len(gates) and all(r["status"] == "sent" for r in healthy) else None

    rows = await eventually(healthy_all_sent, timeout=60, what="the healthy channel's deliveries sent")
    # ... while the stuck channel is still hanging on its first request: nothing of it finished.
    stuck = [r for r in rows if r["channel"] == "stuck"]
    assert len(stuck) == len(gates) and not any(r["status"] in ("sent", "dead") for r in stuck)
    assert sum(notifier.http.hanging.values()) == 1
    assert len(notifier.http.accepted["healthy"]) == len(gates)


async def test_a_restart_mid_retry_loses_and_duplicates_nothing(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["once"] = "fail-first"
    routing = webhook_routing(notifier, ("once", {}))
    # Retries wait long enough that the first replica is stopped with all of them pending.
    await notifier.start(routing, delivery_backoff_base_seconds=1.5, delivery_backoff_cap_seconds=2)
    gates = [gate_opened() for _ in range(6)]
    for opened in gates:
        await notifier.publish(opened)
    await notifier.wait_deliveries(
        None, lambda r: r["attempts"] >= 1, count=len(gates), what="every delivery tried once"
    )
    await notifier.stop_service()
    rows = await notifier.deliveries()
    assert len(notifier.http.accepted["once"]) == sum(r["status"] == "sent" for r in rows)
    assert any(r["status"] == "pending" for r in rows), "the restart should come mid-retry"

    await notifier.start(routing, delivery_backoff_base_seconds=1.5, delivery_backoff_cap_seconds=2)
    # The replayed topic (the new service joins the same group) adds no delivery: the inbox skips them.
    for opened in gates[:2]:
        await notifier.publish(opened)
    rows = await notifier.wait_deliveries(None, lambda r: r["status"] == "sent", count=len(gates), what="all sent")
    assert len(rows) == len(gates)
    keys = {r["idempotency_key"] for r in rows}
    assert set(notifier.http.accepted["once"]) == keys
    for key in keys:  # the first try failed, the retry (after the restart or before it) was accepted once
        tries = [h for h in notifier.http.hits["once"] if h.headers["Idempotency-Key"] == key]
        assert len(tries) >= 2


async def test_a_stop_lets_a_send_under_way_finish_so_it_is_not_sent_again(notifier: NotifierHarness) -> None:
    """SIGTERM while a message is on its way: the send is answered and recorded, not cancelled and sent again by
    the next replica (chat webhooks do not dedupe)."""
    notifier.http.behaviour["slow"] = "held"
    await notifier.start(webhook_routing(notifier, ("slow", {})))
    opened = gate_opened()
    await notifier.publish(opened)

    async def in_flight() -> bool:
        return notifier.http.hanging["slow"] == 1

    await eventually(in_flight, what="the send in flight")
    service = notifier.service
    assert service is not None
    stopping = asyncio.create_task(notifier.stop_service())

    async def stop_begun() -> bool:
        return service.stopping.is_set()

    await eventually(stop_begun, what="the stop begun")
    notifier.http.release.set()  # the sink answers while the dispatcher is stopping
    await stopping
    (row,) = await notifier.deliveries(opened.gate_id)
    assert (row["status"], row["attempts"]) == ("sent", 1), row
    assert len(notifier.http.hits["slow"]) == 1


async def test_a_stop_while_a_failed_try_is_being_recorded_gives_the_delivery_back(notifier: NotifierHarness) -> None:
    """The shutdown cancels a send whose failure is being written: the row must not stay `sending` for its lease
    (two minutes by default), it is released like any row this replica had not settled."""
    notifier.http.behaviour["stall"] = "hang"  # holds the request until released, then answers 503
    await notifier.start(
        webhook_routing(notifier, ("stall", {})), delivery_backoff_base_seconds=60, delivery_backoff_cap_seconds=60
    )
    opened = gate_opened()
    await notifier.publish(opened)

    async def in_flight() -> bool:
        return notifier.http.hanging["stall"] == 1

    await eventually(in_flight, what="the send in flight")

    async def waiting_on(fragment: str):
        async with notifier.pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                f"%{fragment}%",
            )

    async with notifier.pool.acquire() as locker:
        lock = locker.transaction()
        await lock.start()
        await locker.execute(f'SELECT 1 FROM "{SCHEMA}".deliveries WHERE gate_id = $1 FOR UPDATE', opened.gate_id)  # noqa: S608
        notifier.http.release.set()  # the sink answers 503: recording the failed try now waits on the lock
        await eventually(lambda: waiting_on("last_error = $4"), what="the failure being recorded")
        stopping = asyncio.create_task(notifier.stop_service())

        async def released_or_stopped():
            return stopping.done() or await waiting_on("attempts = attempts - 1")

        await eventually(released_or_stopped, what="the stop giving the row back (or ending without it)")
        await lock.rollback()
        await stopping
    (row,) = await notifier.deliveries(opened.gate_id)
    assert (row["status"], row["attempts"]) == ("pending", 0), row  # due again at once, the try not counted


async def test_a_delivery_left_by_a_dead_replica_is_sent_after_its_lease(notifier: NotifierHarness) -> None:
    clock = FixedClock(START)
    routing = webhook_routing(notifier, ("lease", {}))
    lease = timedelta(seconds=120)
    await notifier.start(routing, clock=clock)  # creates the pool; the dispatcher claims at START
    repository = NotifierRepository()

    def row(key: str) -> NewDelivery:
        return NewDelivery(
            key,
            "gate-lease",
            f"event-{key}",
            "opened",
            "",
            "lease",
            "webhook",
            "lease",
            4,
            "application/json",
            None,
            f'{{"k": "{key}"}}',
            None,
            [("ce-id", key)],
        )

    await notifier.stop_service()
    async with notifier.pool.acquire() as conn:
        await repository.insert_deliveries(conn, [row("orphan")], START)
        # A replica claims it and dies before recording anything.
        (claimed,) = await repository.claim(conn, "lease", START, lease, 10)
        assert claimed["status"] == "sending" and claimed["attempts"] == 1
    await notifier.start(routing, clock=clock, delivery_lease_seconds=lease.total_seconds())
    async with notifier.pool.acquire() as conn:
        await repository.insert_deliveries(conn, [row("fresh")], START)

    async def fresh_sent():
        rows = {r["idempotency_key"]: r for r in await notifier.deliveries()}
        return rows if rows["fresh"]["status"] == "sent" else None

    rows = await eventually(fresh_sent, what="the fresh delivery sent")
    assert rows["orphan"]["status"] == "sending"  # still leased to the dead replica
    clock.advance(lease + timedelta(seconds=1))
    rows = await notifier.wait_deliveries(None, lambda r: r["status"] == "sent", count=2, what="orphan sent")
    orphan = next(r for r in rows if r["idempotency_key"] == "orphan")
    assert orphan["attempts"] == 2
    assert set(notifier.http.accepted["lease"]) == {"orphan", "fresh"}


async def test_a_429_with_retry_after_is_tried_again_no_sooner_than_asked(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["limited"] = "retry-after"
    await notifier.start(webhook_routing(notifier, ("limited", {})), delivery_max_attempts=3)
    opened = gate_opened()
    await notifier.publish(opened)
    (row,) = await notifier.wait_deliveries(
        opened.gate_id, lambda r: r["attempts"] == 1 and r["status"] == "pending", count=1, what="the first try"
    )
    # The backoff alone would retry after 1-2 s; the channel asked for 120 s.
    assert row["next_attempt_at"] - row["updated_at"] >= timedelta(seconds=120)
    assert "HTTP 429" in row["last_error"]


async def test_a_delivery_whose_channel_was_removed_from_routing_is_dropped(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["gone"] = "retry-after"  # its first try fails; the retry waits two minutes
    await notifier.start(webhook_routing(notifier, ("kept", {}), ("gone", {})))
    opened = gate_opened()
    await notifier.publish(opened)
    await notifier.wait_deliveries(
        opened.gate_id,
        lambda r: (r["channel"], r["status"]) in (("kept", "sent"), ("gone", "pending")) and r["attempts"] == 1,
        count=2,
        what="kept sent, gone waiting for its retry",
    )
    await notifier.stop_service()
    await notifier.start(webhook_routing(notifier, ("kept", {})))  # the routing file no longer has `gone`
    rows = await notifier.wait_deliveries(
        opened.gate_id,
        lambda r: r["status"] == ("sent" if r["channel"] == "kept" else "dead"),
        count=2,
        what="the delivery of the removed channel ended",
    )
    (gone,) = [row for row in rows if row["channel"] == "gone"]
    assert gone["last_error"] == "dropped: channel removed" and gone["attempts"] == 1


async def test_a_replica_without_a_routing_file_drops_no_other_channels_deliveries(notifier: NotifierHarness) -> None:
    """A pod that lost its routing mount falls back to the dev-log routing: the deliveries of the real channels are
    not its to end (it did end them all, as removed channels, for every other replica)."""
    notifier.http.behaviour["hook"] = "retry-after"  # its first try fails; the retry waits two minutes
    await notifier.start(webhook_routing(notifier, ("hook", {})))
    opened = gate_opened()
    await notifier.publish(opened)
    await notifier.wait_deliveries(
        opened.gate_id, lambda r: r["status"] == "pending" and r["attempts"] == 1, count=1, what="the first try"
    )
    await notifier.stop_service()
    await notifier.start(dev_routing())
    later = gate_opened()
    await notifier.publish(later)  # sent by dev-log: the dispatcher is past its start
    await notifier.wait_deliveries(later.gate_id, lambda r: r["status"] == "sent", count=1, what="dev-log sent")
    (kept,) = await notifier.wait_deliveries(opened.gate_id, lambda r: True, count=1, what="the hook's delivery")
    assert (kept["channel"], kept["status"], kept["attempts"]) == ("hook", "pending", 1)
    assert "dropped" not in (kept["last_error"] or "")


async def test_a_claim_is_an_index_scan_in_claim_order_however_large_the_backlog(notifier: NotifierHarness) -> None:
    """A consumer batch writes its rows with one `next_attempt_at`: the claim must not read and sort every due row
    (it did, so its cost grew with the backlog it drains)."""
    await notifier.start(webhook_routing(notifier, ("bulk", {})))
    await notifier.stop_service()
    repository = NotifierRepository()
    rows = [
        NewDelivery(
            f"bulk-{n}",
            f"gate-{n}",
            f"event-{n}",
            "opened",
            "",
            "bulk",
            "webhook",
            "bulk",
            4,
            "application/json",
            None,
            "{}",
            None,
            [],
        )
        for n in range(20_000)
    ]
    async with notifier.pool.acquire() as conn:
        assert await repository.insert_deliveries(conn, rows, START) == len(rows)
        await conn.execute(f'ANALYZE "{SCHEMA}".deliveries')
        plan = "\n".join(await repository.explain_claim(conn, "bulk", START, timedelta(minutes=2), 32))
        claimed = await repository.claim(conn, "bulk", START, timedelta(minutes=2), 32)
    assert "deliveries_due_order" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
    assert [row["idempotency_key"] for row in claimed] == [f"bulk-{n}" for n in range(32)]  # oldest first, by id
