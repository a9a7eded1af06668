"""The fixtures are real: a consumer group with manual commits on the broker, transactions and row locks on
PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


async def test_consumer_group_resumes_after_the_last_manual_commit(infra, names):
    topic, group = names.topic("infra"), names.group("infra")
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k", headers=[("h", b"v")])
    finally:
        await producer.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=infra.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=infra.session_timeout_ms,
            heartbeat_interval_ms=max(100, infra.session_timeout_ms // 4),
        )

    first = consumer()
    await first.start()
    seen: list[bytes] = []
    try:
        while len(seen) < 4:
            batch = await first.getmany(timeout_ms=1000, max_records=4 - len(seen))
            for records in batch.values():
                seen.extend(r.value for r in records)
        assert seen == [b"m0", b"m1", b"m2", b"m3"]
        await first.commit({TopicPartition(topic, 0): 4})
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        rest: list[bytes] = []
        while len(rest) < 6:
            batch = await second.getmany(timeout_ms=1000)
            for records in batch.values():
                rest.extend(r.value for r in records)
                assert all(dict(r.headers)["h"] == b"v" for r in records)
        assert rest == [f"m{i}".encode() for i in range(4, 10)]
    finally:
        await second.stop()


async def test_transaction_rolls_back_and_skip_locked_skips_a_locked_row(database_url):
    setup = await asyncpg.connect(database_url)
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        await setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL)")
        await setup.execute("INSERT INTO jobs VALUES (1, 'new'), (2, 'new')")

        with pytest.raises(RuntimeError):
            async with setup.transaction():
                await setup.execute("UPDATE jobs SET state = 'lost'")
                raise RuntimeError("abort")
        assert await setup.fetchval("SELECT count(*) FROM jobs WHERE state = 'new'") == 2

        claim = "SELECT id FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        async with first.transaction():
            assert await first.fetchval(claim) == 1
            async with second.transaction():
                # Row 1 is locked by the first transaction: the second one takes row 2 without waiting.
                assert await second.fetchval(claim) == 2
    finally:
        for conn in (setup, first, second):
            await conn.close()
