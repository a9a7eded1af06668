"""Reading what a test's roles published: the first records of a topic, with a deadline."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord


async def read_records(bootstrap: str, topic: str, count: int, *, timeout: float = 30) -> list[ConsumerRecord]:
    """The first `count` (or more) records of `topic`, from the earliest offset, each partition in its order, read
    without a consumer group (nothing committed); TimeoutError when fewer came within `timeout` seconds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records
