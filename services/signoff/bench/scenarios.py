"""The measurements. Each returns numbers; the runner pairs them with their baseline from the same run."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from signoff import contracts as wire
from signoff.bench import database
from signoff.bench.roles import BenchError
from signoff.bench.workload import Message, decision
from signoff.runtime.kafka import make_consumer
from signoff.runtime.settings import Settings

# How often progress in the database is sampled: bounds the error of a burst's end time, and keeps the sampling
# itself (a count over the gates) from taking CPU away from what is measured.
POLL_SECONDS = 0.25
APPROVED_TYPE = f'"type":"{wire.GateApproved.event_type}"'.encode()
ENVELOPE_HEAD_BYTES = 512  # specversion, id, source and type precede the subject and the data


@dataclass(frozen=True)
class Throughput:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True)
class Latencies:
    samples: Sequence[float]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in seconds."""
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


async def joined(consumer: AIOKafkaConsumer, timeout: float = 60.0) -> None:
    """Start `consumer` and return once the group gave it partitions and it has read what is already there (a
    fetch came back empty), so what it reads next is what the measurement publishes."""
    await consumer.start()
    deadline = time.monotonic() + timeout
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        if consumer.assignment() and not batches:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"consumer of {sorted(consumer.subscription())} did not join within {timeout:.0f}s")


async def skip_backlog(settings: Settings, topic: str, group_id: str, timeout: float = 60.0) -> None:
    """Commit group `group_id`'s offsets at the end of `topic`, as if its members had read everything on it, so a
    role of that group started next reads only what is published after (its members must be stopped)."""
    consumer = make_consumer(settings, [topic], group_id, "signoff-bench-skip")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
            if time.monotonic() > deadline:
                raise BenchError(f"group {group_id} gave no partitions of {topic} within {timeout:.0f}s")
        partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        await consumer.commit(ends)
    finally:
        await consumer.stop()


async def _send_all(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]) -> None:
    deliveries = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in messages]
    await asyncio.gather(*deliveries)


async def raw_produce_consume(
    settings: Settings, producer: AIOKafkaProducer, topic: str, group: str, messages: Sequence[Message]
) -> Throughput:
    """The broker's own rate: produce `messages` to `topic` and consume them all with a consumer group (no
    database, no decoding). From the first send to the last message read."""
    consumer = make_consumer(settings, [topic], group, "signoff-bench")
    await joined(consumer)
    try:
        started = time.perf_counter()
        sending = asyncio.create_task(_send_all(producer, topic, messages))
        received = 0
        while received < len(messages):
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            received += sum(len(records) for records in batches.values())
            if sending.done() and sending.exception() is not None:
                raise BenchError(f"producing to {topic} failed: {sending.exception()!r}")
        finished = time.perf_counter()
        await sending
    finally:
        await consumer.stop()
    return Throughput(len(messages), finished - started)


async def burst(
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    topic: str,
    pipeline: str,
    messages: Sequence[Message],
    timeout: float = 600.0,
) -> Throughput:
    """Publish `messages` (requests of `pipeline`) and time until every gate is persisted and its GateOpened
    published by the running approval role."""
    started = time.perf_counter()
    sending = asyncio.create_task(_send_all(producer, topic, messages))
    deadline = started + timeout
    while True:
        # The cheap count first; the join only once every gate is persisted.
        gates = await database.gates_of(pool, pipeline)
        published = await database.published_opened(pool, pipeline) if gates == len(messages) else 0
        if gates == published == len(messages):
            finished = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"after {timeout:.0f}s only {gates} gates persisted and {published} published")
        await asyncio.sleep(POLL_SECONDS)  # sampling progress in the database: there is no event to wait on
    await sending
    return Throughput(len(messages), finished - started)


async def _paced(count: int, rate: float, send) -> None:
    """Call `send(i)` for i in range(count) at `rate` per second (open loop: late sends are not skipped)."""
    started = time.perf_counter()
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for an event
        await send(index)


async def _round_trips(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    messages: Sequence[tuple[Hashable, str, Message]],
    *,
    rate: float,
    patience: float,
    answer_to: Callable[[ConsumerRecord], Hashable | None],
) -> list[float]:
    """Produce `messages` (id, topic, message) at `rate` per second and, for each, the time until `consumer` reads
    the record `answer_to` maps back to its id. Gives up `patience` seconds after the last send is due; the caller
    checks that every message was answered."""
    sent: dict[Hashable, float] = {}
    latencies: list[float] = []

    async def send(index: int) -> None:
        message_id, topic, (key, value, headers) = messages[index]
        sent[message_id] = time.perf_counter()
        await producer.send(topic, value, key=key, headers=headers)

    try:
        sending = asyncio.create_task(_paced(len(messages), rate, send))
        deadline = time.perf_counter() + len(messages) / rate + patience
        while len(latencies) < len(messages) and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    message_id = answer_to(record)
                    if message_id in sent:
                        latencies.append(now - sent[message_id])
        await sending
    finally:
        await consumer.stop()
    return latencies


async def broker_latency(
    settings: Settings, producer: AIOKafkaProducer, topic: str, group: str, rate: float, seconds: float, size: int
) -> Latencies:
    """Produce -> consume latency of the broker alone, `size`-byte messages at `rate` per second."""
    consumer = make_consumer(settings, [topic], group, "signoff-bench")
    await joined(consumer)
    count = int(rate * seconds)
    payload = b"x" * size
    messages = [(str(i).encode(), topic, (str(i).encode(), payload, [])) for i in range(count)]
    latencies = await _round_trips(
        producer, consumer, messages, rate=rate, patience=60, answer_to=lambda record: record.key
    )
    if len(latencies) < count:
        raise BenchError(f"the broker delivered {len(latencies)} of {count} messages within the deadline")
    return Latencies(latencies)


async def decision_latency(
    settings: Settings,
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    *,
    decisions_topic: str,
    gates_topic: str,
    group: str,
    pipeline: str,
    key: bytes,
    rate: float,
    seconds: float,
) -> Latencies:
    """Decision -> outcome: approve pending gates of `pipeline` at `rate` per second; for each, the time from
    producing the decision to reading its GateApproved on the gates topic."""
    consumer = make_consumer(settings, [gates_topic], group, "signoff-bench")
    await joined(consumer, timeout=300)  # reads the GateOpened backlog first
    count = int(rate * seconds)
    gates = await database.pending_tokens(pool, pipeline, count)
    if len(gates) < count:
        raise BenchError(f"only {len(gates)} pending gates of {pipeline} to decide, {count} needed")
    messages = [(gate_id, decisions_topic, decision(gate_id, token, key)) for gate_id, token in gates]

    def approved_gate(record: ConsumerRecord) -> str | None:
        # The topic also carries every GateOpened of a burst (3 KB each, 20,000 in P2b): validating each would
        # make the reader the bottleneck it measures. The envelope's type comes first in the value (signoff's
        # structured mode), so only a GateApproved is decoded.
        if APPROVED_TYPE not in record.value[:ENVELOPE_HEAD_BYTES]:
            return None
        event = wire.decode(record.value, list(record.headers))
        return event.data.gate_id if isinstance(event.data, wire.GateApproved) else None

    latencies = await _round_trips(producer, consumer, messages, rate=rate, patience=120, answer_to=approved_gate)
    if len(latencies) < count:
        raise BenchError(f"{len(latencies)} of {count} decisions produced an outcome within the deadline")
    return Latencies(latencies)


async def notifier_fan_out(sink, count: int, timeout: float = 600.0) -> Throughput:
    """Deliveries per second the running notifier makes to `sink` once it has started sending: from the first
    POST to the `count`-th (its consumer keeps turning the gates topic's backlog into delivery rows meanwhile)."""
    await sink.wait_for(count, timeout)
    return Throughput(count - 1, sink.arrivals[count - 1] - sink.arrivals[0])


async def bare_post_loop(url: str, body: bytes, count: int, concurrency: int) -> Throughput:
    """The same sink fed by `concurrency` plain aiohttp POST loops with `body`: no database, no rendering."""
    remaining = count

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                response.raise_for_status()

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(loop(session) for _ in range(concurrency)))
    return Throughput(count, time.perf_counter() - started)


async def api_decision_latency(url: str, token: str, gate_ids: Sequence[str], rate: float) -> Latencies:
    """An approval through the api: POST /api/v1/gates/{id}/decisions at `rate` per second (open loop), each timed
    until its 200 with the approval service's verdict."""
    latencies: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def one(gate_id: str) -> None:
            started = time.perf_counter()
            async with http.post(f"{url}/api/v1/gates/{gate_id}/decisions", json={"status": "Approved"}) as answer:
                body = await answer.json()
            if answer.status != 200 or body.get("outcome") != "counted":
                failures.append(f"{answer.status} {body.get('code') or body.get('outcome')}")
                return
            latencies.append(time.perf_counter() - started)

        tasks: list[asyncio.Task[None]] = []

        async def send(index: int) -> None:
            tasks.append(asyncio.create_task(one(gate_ids[index])))

        await _paced(len(gate_ids), rate, send)
        await asyncio.gather(*tasks)
    if failures:
        raise BenchError(f"{len(failures)} of {len(gate_ids)} api decisions not counted (first: {failures[0]})")
    return Latencies(latencies)


async def api_list_latency(url: str, token: str, count: int) -> Latencies:
    """`GET /api/v1/gates?mine=true` (a page of 50), `count` times one after another."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.get(f"{url}/api/v1/gates", params={"mine": "true", "limit": "50"}) as answer:
                body = await answer.json()
            if answer.status != 200 or len(body["gates"]) == 0:
                raise BenchError(f"GET /api/v1/gates?mine=true answered {answer.status}: {str(body)[:200]}")
            latencies.append(time.perf_counter() - started)
    return Latencies(latencies)
