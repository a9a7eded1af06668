"""The shared consume -> apply -> commit -> outbox -> DLQ loop, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import signal

import asyncpg
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from signoff.contracts import encode
from signoff.contracts.topics import DLQ_HEADER_ORIGINAL_OFFSET, DLQ_HEADER_ORIGINAL_TOPIC, DLQ_HEADER_REASON
from signoff.runtime import consumer as consumer_module
from signoff.runtime.consumer import ConsumerLoop
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import ensure_topics, make_consumer, make_producer
from signoff.runtime.migrations import migrate, runtime_migrations
from signoff.runtime.outbox import OutboxRecord, OutboxRelay, OutboxWriter
from signoff.runtime.service import Service, ServiceSpec
from tests.support.events import make_event
from tests.support.ledger import SCHEMA, LedgerHandler, applied, migrate_ledger
from tests.support.topics import read_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


class Harness:
    """One test's topic, dead-letter topic, group, database pool and ledger."""

    def __init__(self, settings, names, database_url) -> None:
        self.settings = settings
        self.topic = names.topic("signoff.test.events")
        self.dead_letters = names.topic("signoff.test.deadletter")
        self.group = names.group("signoff-test")
        self.group_id = self.group  # the Kafka consumer group of the loops; `group` names their inbox
        self.dsn = database_url
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Harness:
        await migrate_ledger(self.dsn)
        await ensure_topics(
            self.settings.model_copy(update={"kafka_topic_partitions": 1}), [self.topic, self.dead_letters]
        )
        self.pool = await create_pool(self.dsn)
        self.producer = make_producer(self.settings, "test-producer")
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.producer is not None and self.pool is not None
        await self.producer.stop()
        await self.pool.close()

    def loop(self, handler: LedgerHandler, loop_class: type[ConsumerLoop] = ConsumerLoop) -> ConsumerLoop:
        assert self.pool is not None
        return loop_class(
            name=self.group,
            topics=[self.topic],
            consumer=make_consumer(self.settings, [self.topic], self.group_id, "test-consumer"),
            pool=self.pool,
            schema=SCHEMA,
            handler=handler,
            dead_letter_topic=self.dead_letters,
        )

    async def send(self, value: bytes | None, headers=(), key: bytes = b"k") -> int:
        assert self.producer is not None
        meta = await self.producer.send_and_wait(self.topic, value, key=key, headers=list(headers))
        return meta.offset

    async def send_event(self, event) -> int:
        value, headers = encode(event)
        return await self.send(value, headers)

    async def committed(self) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(self.topic, 0)) or 0
        finally:
            await consumer.stop()

    async def read_dead_letters(self, count: int) -> list:
        return await read_records(self.settings.kafka_bootstrap, self.dead_letters, count)


@contextlib.asynccontextmanager
async def running(loop: ConsumerLoop, relay: OutboxRelay | None = None):
    await loop.start()
    tasks = [asyncio.create_task(loop.run())]
    if relay is not None:
        tasks.append(asyncio.create_task(relay.run()))
    try:
        yield tasks[0]
    finally:
        loop.stop()
        if relay is not None:
            relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.consumer.stop()


@pytest.fixture
async def harness(settings, names, database_url):
    async with Harness(settings, names, database_url) as h:
        yield h


async def test_the_same_event_delivered_three_times_is_applied_once(harness):
    event = make_event("gate-1")
    for _ in range(3):
        last = await harness.send_event(event)
    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
    assert await applied(harness.dsn) == {event.id: 1}


async def test_events_of_two_sources_with_one_id_are_both_applied_and_each_redelivery_skipped(harness):
    """CloudEvents: source + id identify an event. Two producers numbering their events alike are not duplicates
    of each other; a redelivery of either still is."""
    first = dataclasses.replace(make_event("gate-a"), id="42")
    second = dataclasses.replace(make_event("gate-b"), id="42", source="urn:other:producer")
    for event in (first, second, first, second):
        last = await harness.send_event(event)
    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
    assert await applied(harness.dsn) == {"42": 2}
    conn = await asyncpg.connect(harness.dsn)
    try:
        rows = await conn.fetch(f'SELECT source FROM "{SCHEMA}".inbox WHERE event_id = $1', "42")  # noqa: S608
    finally:
        await conn.close()
    assert sorted(row["source"] for row in rows) == ["urn:other:producer", "urn:signoff:test"]


async def test_an_event_remembered_before_the_inbox_kept_sources_is_still_a_duplicate(harness):
    """A row of runtime migration 0004's upgrade has source '': a redelivery of its event, whatever its source,
    is skipped (the crash window of a rolling upgrade); an event with a new id is applied."""
    remembered = make_event("gate-old")
    new = make_event("gate-new")
    conn = await asyncpg.connect(harness.dsn)
    try:
        await conn.execute(
            f"""INSERT INTO "{SCHEMA}".inbox (consumer, event_id, source, topic, partition, "offset")
                VALUES ($1, $2, '', $3, 0, 0)""",  # noqa: S608
            harness.group,
            remembered.id,
            harness.topic,
        )
    finally:
        await conn.close()
    await harness.send_event(remembered)
    last = await harness.send_event(new)
    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
    assert await applied(harness.dsn) == {new.id: 1}


async def _committed_at_least(harness, offset: int) -> bool:
    return await harness.committed() >= offset


class CrashAfterDatabaseCommit(ConsumerLoop):
    """Dies between the database commit and the offset commit, like a process killed at that instant."""

    async def _commit_offsets(self, batches) -> None:
        raise SystemExit("crash before the offset commit")


async def test_a_crash_between_database_and_offset_commit_redelivers_and_dedupes(harness):
    events = [make_event(f"gate-{i}") for i in range(5)]
    for event in events:
        last = await harness.send_event(event)

    crashing = harness.loop(LedgerHandler(), CrashAfterDatabaseCommit)
    await crashing.start()
    with pytest.raises(SystemExit):
        await crashing.run()
    await crashing.consumer.stop()
    assert await applied(harness.dsn) == {e.id: 1 for e in events}
    assert await harness.committed() == 0  # nothing committed: everything will be redelivered

    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed after restart")
    assert await applied(harness.dsn) == {e.id: 1 for e in events}


async def test_invalid_records_are_dead_lettered_and_the_valid_ones_around_them_applied(harness):
    before, after = make_event("gate-before"), make_event("gate-after")
    wrong_schema = json.loads(encode(make_event("gate-wrong"))[0])
    wrong_schema["data"] = {"unexpected": True}
    unknown_type = json.loads(encode(make_event("gate-unknown"))[0])
    unknown_type["type"] = "io.example.unknown.v1"
    too_large = json.loads(encode(make_event("gate-large"))[0])
    too_large["data"]["padding"] = "x" * 900_000
    ce_header = [("content-type", b"application/cloudevents+json")]

    await harness.send_event(before)
    bad_offsets = {
        "malformed_json": await harness.send(b"{not json", ce_header),
        "invalid_data": await harness.send(json.dumps(wrong_schema).encode(), ce_header),
        "unknown_type": await harness.send(json.dumps(unknown_type).encode(), ce_header),
        "too_large": await harness.send(json.dumps(too_large).encode(), ce_header),
    }
    last = await harness.send_event(after)

    async with running(harness.loop(LedgerHandler()), OutboxRelay(harness.pool, harness.producer, SCHEMA)):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
        dead = await harness.read_dead_letters(4)

    assert await applied(harness.dsn) == {before.id: 1, after.id: 1}
    by_offset = {int(dict(r.headers)[DLQ_HEADER_ORIGINAL_OFFSET]): dict(r.headers) for r in dead}
    assert {offset: headers[DLQ_HEADER_REASON].decode() for offset, headers in by_offset.items()} == {
        offset: reason for reason, offset in bad_offsets.items()
    }
    assert all(h[DLQ_HEADER_ORIGINAL_TOPIC].decode() == harness.topic for h in by_offset.values())
    large = next(r for r in dead if int(dict(r.headers)[DLQ_HEADER_ORIGINAL_OFFSET]) == bad_offsets["too_large"])
    assert len(large.value) > 900_000  # the original value is kept, for replay


async def test_an_event_the_handler_refuses_is_dead_lettered_alone(harness):
    good = [make_event("gate-a"), make_event("gate-b")]
    poison = make_event("poison")
    await harness.send_event(good[0])
    await harness.send_event(poison)
    last = await harness.send_event(good[1])
    async with running(harness.loop(LedgerHandler()), OutboxRelay(harness.pool, harness.producer, SCHEMA)):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
        [dead] = await harness.read_dead_letters(1)
    assert await applied(harness.dsn) == {good[0].id: 1, good[1].id: 1}
    assert dict(dead.headers)[DLQ_HEADER_REASON] == b"handler_error"


class TellingLedger(LedgerHandler):
    """A ledger that, when it gives up on an event, tells (a ledger row for the poison's sender), or fails to."""

    def __init__(self, *, tell_fails: bool = False) -> None:
        super().__init__()
        self.tell_fails = tell_fails

    async def gave_up(self, uow, received, error: str) -> None:
        if self.tell_fails:
            raise RuntimeError("telling failed too")
        await uow.conn.execute(
            'INSERT INTO ledger.applied (event_id, subject, topic, partition, "offset") VALUES ($1, $2, $3, $4, $5)',
            f"told:{received.event.id}",
            error,
            received.topic,
            received.partition,
            received.offset,
        )


@pytest.mark.parametrize("tell_fails", [False, True], ids=["tells", "telling-fails"])
async def test_a_handler_that_gives_up_on_an_event_tells_its_sender_in_the_dead_letters_transaction(
    harness, tell_fails: bool
):
    good, poison = make_event("gate-a"), make_event("poison")
    await harness.send_event(poison)
    last = await harness.send_event(good)
    handler = TellingLedger(tell_fails=tell_fails)
    async with running(harness.loop(handler), OutboxRelay(harness.pool, harness.producer, SCHEMA)):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
        [dead] = await harness.read_dead_letters(1)
    assert dict(dead.headers)[DLQ_HEADER_REASON] == b"handler_error"  # dead-lettered either way
    told = {} if tell_fails else {f"told:{poison.id}": 1}
    assert await applied(harness.dsn) == {good.id: 1, **told}


async def test_a_lost_database_connection_retries_the_batch_and_applies_it_once(harness):
    events = [make_event(f"gate-{i}") for i in range(4)]
    for event in events:
        last = await harness.send_event(event)
    handler = LedgerHandler()
    handler.lose_connection_once = True
    async with running(harness.loop(handler)):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed after the retry")
    assert not handler.lose_connection_once  # the failure did happen
    assert await applied(harness.dsn) == {e.id: 1 for e in events}


class DiesBeforeMarkingSent(OutboxRelay):
    async def _mark_sent(self, conn, seqs) -> None:
        raise ConnectionResetError("relay died after publishing, before marking the rows sent")


async def test_an_outbox_row_published_but_not_marked_is_published_again_and_deduped(harness):
    events = [make_event(f"gate-{i}") for i in range(3)]
    async with harness.pool.acquire() as conn, conn.transaction():
        writer = OutboxWriter(SCHEMA)
        for event in events:
            value, headers = encode(event)
            writer.add(OutboxRecord(event.id, harness.topic, event.subject.encode(), event.type, value, headers))
        await writer.flush(conn)

    with pytest.raises(ConnectionResetError):
        await DiesBeforeMarkingSent(harness.pool, harness.producer, SCHEMA).publish_pending()
    relay = OutboxRelay(harness.pool, harness.producer, SCHEMA)
    assert await relay.backlog() == 3
    assert await relay.publish_pending() == 3  # published a second time
    assert await relay.backlog() == 0

    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, 6), what="both copies consumed")
    assert await applied(harness.dsn) == {e.id: 1 for e in events}


async def test_the_backlog_gauge_follows_the_outbox_while_publishing_fails(harness):
    """The broker unreachable (here: the relay's producer closed, so every send fails): rows pile up, and
    signoff_outbox_backlog_rows says how many, which is what the SignoffOutboxBacklog alert watches."""
    from prometheus_client import REGISTRY

    from signoff.runtime.metrics import OUTBOX_BACKLOG

    async with harness.pool.acquire() as conn, conn.transaction():
        writer = OutboxWriter(SCHEMA)
        for event in [make_event(f"gate-stuck-{i}") for i in range(4)]:
            value, headers = encode(event)
            writer.add(OutboxRecord(event.id, harness.topic, event.subject.encode(), event.type, value, headers))
        await writer.flush(conn)
    closed = make_producer(harness.settings, "closed-producer")
    await closed.start()
    await closed.stop()
    OUTBOX_BACKLOG.labels(SCHEMA).set(-1)  # whatever an earlier test left: this relay must set it
    relay = OutboxRelay(harness.pool, closed, SCHEMA, poll_interval=0.05)

    async def backlog_is_four() -> bool:
        return REGISTRY.get_sample_value("signoff_outbox_backlog_rows", {"schema": SCHEMA}) == 4

    task = asyncio.create_task(relay.run())
    try:
        await eventually(backlog_is_four, what="the backlog gauge at 4 while every publish fails")
        assert not relay.healthy
    finally:
        relay.stop()
        await task


async def test_sigterm_during_a_batch_lets_it_commit_fully(harness):
    """A real SIGTERM to this process while the handler is in the middle of a batch: the service stops fetching,
    the batch commits with its offsets, and a restart neither loses nor re-applies anything."""
    events = [make_event(f"gate-{i}") for i in range(20)]
    for event in events:
        last = await harness.send_event(event)
    handler = LedgerHandler()
    handler.pause = asyncio.Event()
    spec = ServiceSpec(
        name="ledger",
        schema=SCHEMA,
        migrations_package=None,
        consumes=[harness.topic],
        produces=[],
        handler=lambda _ctx: handler,
        group_id=harness.group,
    )
    service = Service(spec, harness.settings)
    run = asyncio.create_task(service.run())
    await asyncio.wait_for(handler.paused.wait(), 30)
    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(lambda: _true(service.stopping.is_set()), what="SIGTERM handled")
    handler.pause.set()  # the batch in flight finishes after the stop was requested
    await asyncio.wait_for(run, 60)

    counts = await applied(harness.dsn)
    assert counts and set(counts.values()) == {1}
    assert await harness.committed() == max(r["offset"] for r in await _positions(harness)) + 1

    async with running(harness.loop(LedgerHandler())):
        await eventually(lambda: _committed_at_least(harness, last + 1), what="the rest consumed after restart")
    assert await applied(harness.dsn) == {e.id: 1 for e in events}


async def _true(value: bool) -> bool:
    return value


async def _positions(harness) -> list:
    async with harness.pool.acquire() as conn:
        return await conn.fetch('SELECT "offset" FROM ledger.applied')


async def test_health_readiness_and_metrics_endpoints(harness):
    import aiohttp

    event = make_event("gate-metrics")
    last = await harness.send_event(event)
    spec = ServiceSpec(
        name="ledger",
        schema=SCHEMA,
        migrations_package=None,
        consumes=[harness.topic],
        produces=[],
        handler=lambda _ctx: LedgerHandler(),
        group_id=harness.group,
    )
    service = Service(spec, harness.settings.model_copy(update={"http_host": "127.0.0.1"}))
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.http.port}"
        async with aiohttp.ClientSession() as http:

            async def status(path: str) -> int:
                async with http.get(base + path) as response:
                    return response.status

            assert await status("/healthz") == 200
            await eventually(lambda: _equals(status("/readyz"), 200), what="ready after joining the group")
            await eventually(lambda: _committed_at_least(harness, last + 1), what="event consumed")
            async with http.get(base + "/metrics") as response:
                metrics = await response.text()
        assert f'signoff_events_applied_total{{consumer="{harness.group}",type="{event.type}"}}' in metrics
        assert "signoff_batch_duration_seconds_bucket" in metrics
    finally:
        await service.stop()
    assert await applied(harness.dsn) == {event.id: 1}


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


def _lag_partitions(name: str, topic: str) -> set[int]:
    """Partitions with a `signoff_consumer_lag_records` series of consumer `name` on `topic` in this process."""
    from signoff.runtime.metrics import CONSUMER_LAG

    return {
        int(sample.labels["partition"])
        for metric in CONSUMER_LAG.collect()
        for sample in metric.samples
        if sample.labels["consumer"] == name and sample.labels["topic"] == topic
    }


async def test_lag_series_of_revoked_partitions_are_removed(harness, names):
    """Another replica joins and takes a partition: this one stops reporting its lag (no double count)."""
    topic = names.topic("signoff.test.lagged")
    await ensure_topics(harness.settings.model_copy(update={"kafka_topic_partitions": 2}), [topic])
    loop = ConsumerLoop(
        name=harness.group,
        topics=[topic],
        consumer=make_consumer(harness.settings, [topic], harness.group, "test-consumer"),
        pool=harness.pool,
        schema=SCHEMA,
        handler=LedgerHandler(),
        dead_letter_topic=harness.dead_letters,
    )
    async with running(loop):
        for partition in (0, 1):
            value, headers = encode(make_event(f"lag-{partition}"))
            await harness.producer.send_and_wait(topic, value, partition=partition, headers=headers)
        await eventually(lambda: _true(_lag_partitions(harness.group, topic) == {0, 1}), what="lag of both partitions")
        other = make_consumer(harness.settings, [topic], harness.group, "other-replica")
        await other.start()
        try:

            async def taken():
                await other.getmany(timeout_ms=200)
                return other.assignment() or None

            (took,) = await eventually(taken, what="the other replica to own a partition")
            await eventually(
                lambda: _true(took.partition not in _lag_partitions(harness.group, topic)),
                what="the revoked partition's lag series removed",
            )
        finally:
            await other.stop()


async def test_a_record_with_a_nul_byte_in_its_key_or_a_header_name_is_dead_lettered_and_consuming_goes_on(harness):
    """PostgreSQL text and jsonb cannot hold a NUL: the dead-letter row keeps the key and the header names as
    bytes, so such a record is dead-lettered as it came, and the valid records after it are applied."""
    before, after = make_event("gate-before"), make_event("gate-after")
    ce_header = ("content-type", b"application/cloudevents+json")
    await harness.send_event(before)
    nul_key = await harness.send(b"{not json", [ce_header], key=b"gate\x00key")
    nul_header = await harness.send(b"{not json", [ce_header, ("x-trace\x00id", b"v\x00")], key=b"k")
    not_utf8_key = await harness.send(b"{not json", [ce_header], key=b"\xff\xfe")
    last = await harness.send_event(after)

    loop = harness.loop(LedgerHandler())
    async with running(loop, OutboxRelay(harness.pool, harness.producer, SCHEMA)) as task:
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
        dead = await harness.read_dead_letters(3)
        assert not task.done()  # the consumer is still running

    assert await applied(harness.dsn) == {before.id: 1, after.id: 1}
    by_offset = {int(dict(r.headers)[DLQ_HEADER_ORIGINAL_OFFSET]): r for r in dead}
    assert by_offset[nul_key].key == b"gate\x00key"
    assert ("x-trace\x00id", b"v\x00") in by_offset[nul_header].headers
    assert by_offset[not_utf8_key].key == b"\xff\xfe"  # the key as it came, not a lossy decoding of it


class DeadLetterRefusedByTheDatabase(ConsumerLoop):
    """Its dead-letter rows carry a NUL in a text column, which PostgreSQL really refuses: the dead-letter path
    fails the way an unforeseen record would make it fail."""

    def _dead_letter(self, refusal):
        return dataclasses.replace(super()._dead_letter(refusal), type="dead-letter\x00")


async def test_a_record_whose_dead_letter_cannot_be_written_is_quarantined_and_consuming_goes_on(harness):
    before, after = make_event("gate-before"), make_event("gate-after")
    await harness.send_event(before)
    bad = await harness.send(b"{not json", [("content-type", b"application/cloudevents+json")], key=b"k\x00")
    last = await harness.send_event(after)

    async with running(harness.loop(LedgerHandler(), DeadLetterRefusedByTheDatabase)) as task:
        await eventually(lambda: _committed_at_least(harness, last + 1), what="offsets committed")
        assert not task.done()

    assert await applied(harness.dsn) == {before.id: 1, after.id: 1}
    async with harness.pool.acquire() as conn:
        [row] = await conn.fetch(f'SELECT * FROM "{SCHEMA}".quarantine')  # noqa: S608
    assert (row["topic"], row["offset"], row["reason"]) == (harness.topic, bad, "malformed_json")
    assert (bytes(row["key"]), bytes(row["value"])) == (b"k\x00", b"{not json")
    assert [bytes(n) for n in row["header_names"]] == [b"content-type"]
    assert "dead letter failed" in row["error"]

    # Redelivered (nothing committed, say), it is not quarantined twice.
    loop = harness.loop(LedgerHandler(), DeadLetterRefusedByTheDatabase)
    await loop.process(await _fetch_all(harness, last + 1))
    async with harness.pool.acquire() as conn:
        assert await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".quarantine') == 1  # noqa: S608


async def _fetch_all(harness, count: int) -> list:
    return await read_records(harness.settings.kafka_bootstrap, harness.topic, count)


async def test_a_new_bad_record_at_a_reused_offset_is_dead_lettered_not_taken_for_a_duplicate(harness):
    """A topic deleted and created again (or a dev broker restarted empty) reuses offsets while PostgreSQL keeps
    the inbox: the dead-letter dedupe key is the record's content as well as its position."""
    ce_header = [("content-type", b"application/cloudevents+json")]
    first = await harness.send(b"{first bad record", ce_header)
    relay = OutboxRelay(harness.pool, harness.producer, SCHEMA)
    async with running(harness.loop(LedgerHandler()), relay):
        await eventually(lambda: _committed_at_least(harness, first + 1), what="first record consumed")
        await harness.read_dead_letters(1)

    admin = AIOKafkaAdminClient(bootstrap_servers=harness.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([harness.topic])
    finally:
        await admin.close()
    await ensure_topics(harness.settings.model_copy(update={"kafka_topic_partitions": 1}), [harness.topic])
    second = await harness.send(b"{second bad record", ce_header)
    assert second == first  # the offset is reused

    # A new group, as on a broker that kept nothing; the same consumer name, so the same inbox.
    harness.group_id = harness.group + "-after"
    async with running(harness.loop(LedgerHandler()), OutboxRelay(harness.pool, harness.producer, SCHEMA)):
        dead = await harness.read_dead_letters(2)
    assert sorted(r.value for r in dead) == [b"{first bad record", b"{second bad record"]


async def test_outbox_rows_written_before_the_bytes_migration_are_published_unchanged(harness):
    """Rows left unsent by the previous version (text key, header names as text) are converted by the migration
    and published with the same key and headers."""
    [first, *_] = runtime_migrations()
    event = make_event("gate-upgraded")
    value, headers = encode(event)
    async with harness.pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA old_outbox")
        await conn.execute(first.sql.replace("{schema}", "old_outbox"))
        await conn.execute(
            """CREATE TABLE old_outbox.schema_migrations (component text, version int, name text, checksum text,
                   applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"""
        )
        await conn.execute(
            "INSERT INTO old_outbox.schema_migrations VALUES ($1, $2, $3, $4)",
            first.component,
            first.version,
            first.name,
            first.checksum,
        )
        await conn.execute(
            """INSERT INTO old_outbox.outbox (id, aggregatetype, aggregateid, type, payload, headers)
               VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)""",
            event.id,
            harness.topic,
            "gate-upgraded",
            event.type,
            value,
            json.dumps([[name, base64.b64encode(v).decode()] for name, v in headers]),
        )
        await migrate(conn, "old_outbox", [])
    assert await OutboxRelay(harness.pool, harness.producer, "old_outbox").publish_pending() == 1
    [record] = await _fetch_all(harness, 1)
    assert (record.key, record.value, list(record.headers)) == (b"gate-upgraded", value, list(headers))


def capture(monkeypatch, module) -> structlog.testing.LogCapture:
    """What `module` logs at info and above, as event dicts."""
    captured = structlog.testing.LogCapture()
    wrapper = structlog.make_filtering_bound_logger(logging.INFO)
    monkeypatch.setattr(module, "log", structlog.wrap_logger(None, processors=[captured], wrapper_class=wrapper))
    return captured


async def test_duplicates_are_logged_once_per_batch(harness, monkeypatch):
    events = [make_event(f"gate-{i}") for i in range(5)]
    for event in events:
        last = await harness.send_event(event)
    records = await _fetch_all(harness, last + 1)
    loop = harness.loop(LedgerHandler())
    await loop.process(records)
    logged = capture(monkeypatch, consumer_module)
    await loop.process(records)  # the same batch again: every event a duplicate
    skipped = [e for e in logged.entries if e["event"] == "event_duplicate_skipped"]
    assert [(e["count"], sorted(e["event_ids"])) for e in skipped] == [(5, sorted(e.id for e in events))]
    assert await applied(harness.dsn) == {e.id: 1 for e in events}
