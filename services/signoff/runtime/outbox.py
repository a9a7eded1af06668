"""The transactional outbox: events to publish are rows written in the same transaction as the state change, and a
relay publishes them afterwards. Handlers never publish to Kafka themselves (that would be a dual write: a crash
between the database commit and the send loses or invents an event)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from signoff.contracts import EventData, encode, message_key, new_event, topic_for
from signoff.runtime.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = structlog.get_logger(__name__)


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes the relay of `schema` when a transaction added outbox rows."""
    return f"signoff_outbox_{schema}"


@dataclass(frozen=True)
class OutboxRecord:
    """One Kafka record to publish: `id` is unique (the CloudEvent id, or a dead-letter id). `key` and the header
    names are kept as the bytes they are on the wire (a dead letter copies a foreign record's, which need not be
    text)."""

    id: str
    topic: str
    key: bytes | None
    type: str
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def event_record(data: EventData, *, source: str, at: datetime, traceparent: str | None = None) -> OutboxRecord:
    """The outbox row publishing `data` as a CloudEvent from `source`: topic by event type, key by the topic's
    contract, the structured-mode value and its headers."""
    event = new_event(data, source=source, time=at, traceparent=traceparent)
    value, headers = encode(event)
    return OutboxRecord(
        id=event.id,
        topic=topic_for(event.type).name,
        key=message_key(event),
        type=event.type,
        value=value,
        headers=headers,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def headers_to_json(headers: Sequence[tuple[str, bytes]]) -> list[list[str]]:
    """The outbox's `headers` column: [base64 name, base64 value] pairs, so any header (a NUL in its name, which
    jsonb cannot hold, included) survives the round trip."""
    return [[_b64(name.encode()), _b64(value)] for name, value in headers]


def headers_from_json(headers: list[list[str]]) -> list[tuple[str, bytes]]:
    """The Kafka headers of an outbox row's `headers` column."""
    return [(base64.b64decode(name).decode(), base64.b64decode(value)) for name, value in headers]


def _as_text(key: bytes | None) -> str | None:
    """The key as text for the `aggregateid` column, or None when it is not (UTF-8 without a NUL)."""
    if key is None:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


class OutboxWriter:
    """Collects records during one unit of work and writes them in one statement before the commit."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.pending: list[OutboxRecord] = []

    def add(self, record: OutboxRecord) -> None:
        """Publish `record` if, and only if, the surrounding transaction commits."""
        self.pending.append(record)

    async def flush(self, conn: asyncpg.Connection) -> int:
        """Insert the collected rows (set-based) and wake the relay on commit; returns how many."""
        if not self.pending:
            return 0
        records, self.pending = self.pending, []
        await conn.execute(
            f"""INSERT INTO "{self.schema}".outbox (id, aggregatetype, aggregateid, key, type, payload, headers)
                SELECT id, topic, aggregateid, key, type, payload, headers::jsonb
                FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::bytea[], $7::text[])
                    AS r(id, topic, aggregateid, key, type, payload, headers)""",  # noqa: S608
            [r.id for r in records],
            [r.topic for r in records],
            [_as_text(r.key) for r in records],
            [r.key for r in records],
            [r.type for r in records],
            [r.value for r in records],
            # As JSON text: a list value inside a jsonb[] parameter would be read as another array dimension.
            [json.dumps(headers_to_json(r.headers)) for r in records],
        )
        # Delivered at commit, and only then: a rolled-back transaction wakes nobody.
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(self.schema))
        return len(records)


class OutboxRelay:
    """Publishes unsent outbox rows in order and marks them sent.

    Wakes on NOTIFY, and polls every `poll_interval` seconds as a fallback (a notification is lost when the
    listening connection drops). One replica publishes a schema's outbox at a time (a transaction-scoped advisory
    lock): two relays taking alternate batches could reorder one gate's events. Rows are claimed with
    FOR UPDATE SKIP LOCKED all the same, so a claim never waits on, or double-sends, a row another transaction holds.
    A crash after the send and before the mark re-publishes the rows: delivery is at least once, and consumers
    dedupe by event id (the inbox).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        schema: str,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        sent_retention_seconds: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.schema = schema
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.sent_retention_seconds = sent_retention_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.healthy = True

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many (0 when none, or another replica holds the lead)."""
        async with self.pool.acquire() as conn, conn.transaction():
            lead = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('signoff.outbox.' || $1::text))", self.schema
            )
            if not lead:
                return 0
            rows = await conn.fetch(
                f"""SELECT seq, id, aggregatetype, key, payload, headers FROM "{self.schema}".outbox
                    WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED""",  # noqa: S608
                self.batch_size,
            )
            if not rows:
                return 0
            await self._send(rows)
            await self._mark_sent(conn, [row["seq"] for row in rows])
        OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def _send(self, rows: Sequence[asyncpg.Record]) -> None:
        deliveries = []
        for row in rows:
            deliveries.append(
                await self.producer.send(
                    row["aggregatetype"], row["payload"], key=row["key"], headers=headers_from_json(row["headers"])
                )
            )
        await asyncio.gather(*deliveries)  # every record acknowledged before any is marked sent

    async def _mark_sent(self, conn: asyncpg.Connection, seqs: list[int]) -> None:
        await conn.execute(
            f'UPDATE "{self.schema}".outbox SET sent_at = now() WHERE seq = ANY($1::bigint[])',  # noqa: S608
            seqs,
        )

    async def backlog(self) -> int:
        """Unsent rows (also exported as signoff_outbox_backlog_rows)."""
        async with self.pool.acquire() as conn:
            count = await conn.fetchval(
                f'SELECT count(*) FROM "{self.schema}".outbox WHERE sent_at IS NULL'  # noqa: S608
            )
        OUTBOX_BACKLOG.labels(self.schema).set(count)
        return int(count)

    async def drain(self, timeout: float = 10.0) -> None:
        """Publish until nothing is pending (graceful shutdown), at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while await self.publish_pending():
                    pass

    async def _prune(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"""DELETE FROM "{self.schema}".outbox
                    WHERE sent_at < now() - make_interval(secs => $1)""",  # noqa: S608
                self.sent_retention_seconds,
            )

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Publish until stop(); transient failures back off (bounded) and retry, never drop a row."""
        listener = await self.pool.acquire()
        channel = notify_channel(self.schema)

        def wake(*_: object) -> None:
            self._wake.set()

        await listener.add_listener(channel, wake)
        delay = 0.1
        loops = 0
        try:
            while not self._stopping.is_set():
                # Cleared before publishing, so a NOTIFY that arrives while we publish triggers another round.
                self._wake.clear()
                try:
                    while await self.publish_pending() and not self._stopping.is_set():
                        pass
                    loops += 1
                    if loops % 60 == 1:  # at the first round too, so the backlog gauge exists from the start
                        await self._prune()
                        await self.backlog()
                    self.healthy = True
                    delay = 0.1
                except Exception as exc:
                    # Kafka or PostgreSQL unavailable (any failure here is of that kind: rows are opaque bytes):
                    # the rows stay unsent and are retried; nothing is lost.
                    self.healthy = False
                    log.warning("outbox_publish_failed", schema=self.schema, error=repr(exc), retry_in=delay)
                    # The backlog grows while the broker is away: the gauge (and its alert) must see it.
                    with contextlib.suppress(Exception):  # the database may be what failed
                        await self.backlog()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(channel, wake)
            await self.pool.release(listener)
