"""Outbox lanes on the real broker and PostgreSQL: a lane's relay publishes its rows while another lane's backlog
waits, and a Kafka key's rows reach the topic in the order they were written, whichever lane wrote them."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from signoff.runtime.db import create_pool
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.outbox import MAIN_LANE, OutboxRecord, OutboxRelay, OutboxWriter
from tests.support.ledger import SCHEMA, migrate_ledger
from tests.support.topics import read_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

LANE = "decisions"


class Lanes:
    """A topic of 3 partitions, the ledger schema's outbox and one producer per lane, as a role with a lane has."""

    def __init__(self, settings, names, database_url) -> None:
        self.settings, self.dsn = settings, database_url
        self.topic = names.topic("signoff.test.lanes")
        self.written = 0

    async def __aenter__(self) -> Lanes:
        await migrate_ledger(self.dsn)
        await ensure_topics(self.settings.model_copy(update={"kafka_topic_partitions": 3}), [self.topic])
        self.pool = await create_pool(self.dsn)
        self.producers = [make_producer(self.settings, f"test-lane-{n}") for n in range(2)]
        for producer in self.producers:
            await producer.start()
        self.main = OutboxRelay(self.pool, self.producers[0], SCHEMA, poll_interval=0.05)
        self.lane = OutboxRelay(self.pool, self.producers[1], SCHEMA, lane=LANE, poll_interval=0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for producer in self.producers:
            await producer.stop()
        await self.pool.close()

    async def write(self, lane: str, keys: list[bytes]) -> list[str]:
        """One transaction writing a row per key in `lane`; returns their ids, in order."""
        writer = OutboxWriter(SCHEMA, lane)
        ids = []
        for key in keys:
            self.written += 1
            ids.append(f"{lane}-{self.written}")
            writer.add(OutboxRecord(ids[-1], self.topic, key, "test", ids[-1].encode()))
        async with self.pool.acquire() as conn, conn.transaction():
            await writer.flush(conn)
        return ids

    async def unsent(self, lane: str) -> int:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(
                f'SELECT count(*) FROM "{SCHEMA}".outbox WHERE sent_at IS NULL AND lane = $1',  # noqa: S608
                lane,
            )

    async def read(self, count: int) -> list:
        """The first `count` records of the topic, each partition in its order."""
        return await read_records(self.settings.kafka_bootstrap, self.topic, count, timeout=60)


@pytest.fixture
async def lanes(settings, names, database_url):
    async with Lanes(settings, names, database_url) as harness:
        yield harness


async def test_a_lane_row_is_published_while_a_large_backlog_of_the_main_lane_is_unsent(lanes):
    await lanes.write(MAIN_LANE, [f"gate-{n}".encode() for n in range(5000)])
    [outcome] = await lanes.write(LANE, [b"gate-decided"])

    assert await lanes.lane.publish_pending() == 1
    [record] = await lanes.read(1)  # the main lane's relay has published nothing: this is the lane's row
    assert (record.key, record.value) == (b"gate-decided", outcome.encode())
    assert await lanes.unsent(MAIN_LANE) == 5000
    assert await lanes.unsent(LANE) == 0


async def test_a_row_waits_for_an_older_unsent_row_with_its_key_in_another_lane(lanes):
    [opened] = await lanes.write(MAIN_LANE, [b"gate-k"])
    approved, other = await lanes.write(LANE, [b"gate-k", b"gate-j"])
    [closed_later] = await lanes.write(MAIN_LANE, [b"gate-j"])

    assert await lanes.lane.publish_pending() == 1  # gate-j's; gate-k's waits for the main lane's older row
    assert await lanes.lane.publish_pending() == 0 and lanes.lane.held
    assert await lanes.main.publish_pending() == 2  # gate-k's older row, and gate-j's (its older row went out)
    assert await lanes.lane.publish_pending() == 1
    assert not lanes.main.held and await lanes.unsent(MAIN_LANE) == await lanes.unsent(LANE) == 0

    by_key = defaultdict(list)
    for record in await lanes.read(4):
        by_key[record.key].append(record.value.decode())
    assert by_key == {b"gate-k": [opened, approved], b"gate-j": [other, closed_later]}


async def test_two_lanes_relayed_together_keep_every_keys_order(lanes):
    """Both relays running while transactions in both lanes write rows for the same few keys: each key's rows
    arrive in the order they were written."""
    shuffle = random.Random(15)
    keys = [f"gate-{n}".encode() for n in range(12)]
    tasks = [asyncio.create_task(lanes.main.run()), asyncio.create_task(lanes.lane.run())]
    written: dict[bytes, list[str]] = defaultdict(list)
    try:
        for round_ in range(60):
            lane = LANE if round_ % 3 == 0 else MAIN_LANE  # the main lane busier, as requests are
            batch = [shuffle.choice(keys) for _ in range(5 if lane == LANE else 40)]
            for key, row_id in zip(batch, await lanes.write(lane, batch), strict=True):
                written[key].append(row_id)

        async def all_sent() -> bool:
            return await lanes.unsent(MAIN_LANE) == await lanes.unsent(LANE) == 0

        await eventually(all_sent, what="both lanes relayed")
    finally:
        lanes.main.stop()
        lanes.lane.stop()
        await asyncio.gather(*tasks)
    received: dict[bytes, list[str]] = defaultdict(list)
    for record in await lanes.read(sum(len(ids) for ids in written.values())):
        received[record.key].append(record.value.decode())
    assert received == written


async def test_the_claims_are_index_scans_on_a_large_outbox(lanes):
    """The bench's shape: an hour of sent rows kept, a burst's 20,000 rows unsent, a few decisions' outcomes."""
    await lanes.write(MAIN_LANE, [f"sent-{n}".encode() for n in range(20_000)])
    async with lanes.pool.acquire() as conn:
        await conn.execute(f'UPDATE "{SCHEMA}".outbox SET sent_at = now()')  # noqa: S608
    await lanes.write(MAIN_LANE, [f"gate-{n}".encode() for n in range(20_000)])
    await lanes.write(LANE, [f"gate-{n}".encode() for n in range(0, 20_000, 1000)])
    async with lanes.pool.acquire() as conn:
        await conn.execute(f'VACUUM ANALYZE "{SCHEMA}".outbox')
        plans = {relay.lane: "\n".join(await relay.explain_claim(conn)) for relay in (lanes.main, lanes.lane)}
    for lane, plan in plans.items():
        assert "Seq Scan" not in plan and "Hash" not in plan, (lane, plan)
        assert "outbox_unsent_lane" in plan and "outbox_unsent_key" in plan, (lane, plan)


async def test_a_lane_drained_at_shutdown_waits_for_the_other_lanes_older_rows(lanes):
    await lanes.write(MAIN_LANE, [b"gate-d"])
    await lanes.write(LANE, [b"gate-d"])
    await asyncio.gather(lanes.lane.drain(), lanes.main.drain())
    assert await lanes.unsent(MAIN_LANE) == await lanes.unsent(LANE) == 0
