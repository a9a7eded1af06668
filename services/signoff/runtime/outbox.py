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
from signoff.runtime.cooperative import cooperate, priority_work
from signoff.runtime.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = structlog.get_logger(__name__)


MAIN_LANE = "main"
"""The outbox lane of everything not written by a consumer lane of its own (see `OutboxRelay`)."""


def notify_channel(schema: str, lane: str = MAIN_LANE) -> str:
    """The LISTEN/NOTIFY channel that wakes the relay of `schema`'s `lane` when a transaction added rows to it."""
    return f"signoff_outbox_{schema}" if lane == MAIN_LANE else f"signoff_outbox_{schema}_{lane}"


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
    """Collects records during one unit of work and writes them in one statement before the commit, in `lane`
    (the relay that publishes them: see `OutboxRelay`)."""

    def __init__(self, schema: str, lane: str = MAIN_LANE) -> None:
        self.schema = schema
        self.lane = lane
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
            f"""INSERT INTO "{self.schema}".outbox (id, aggregatetype, aggregateid, key, type, payload, headers, lane)
                SELECT id, topic, aggregateid, key, type, payload, headers::jsonb, $8
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
            self.lane,
        )
        # Delivered at commit, and only then: a rolled-back transaction wakes nobody.
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(self.schema, self.lane))
        return len(records)


class OutboxRelay:
    """Publishes the unsent outbox rows of one lane in order and marks them sent.

    Wakes on NOTIFY, and polls every `poll_interval` seconds as a fallback (a notification is lost when the
    listening connection drops). One replica publishes a lane of a schema's outbox at a time (a
    transaction-scoped advisory lock): two relays taking alternate batches could reorder one gate's events. Rows
    are claimed with FOR UPDATE SKIP LOCKED all the same, so a claim never waits on, or double-sends, a row
    another transaction holds. A crash after the send and before the mark re-publishes the rows: delivery is at
    least once, and consumers dedupe by event id (the inbox).

    Lanes: each lane has a relay of its own (and its own producer, see `Service`), so the rows of a consumer lane
    (a decision's outcome) never wait behind a burst in another (thousands of GateOpened). Across lanes, order
    holds per Kafka key, which is what a partition keeps: a row is held back while an older row with the same key
    is unsent in another lane, and goes out once that one is acknowledged (rows of other keys pass it). Both
    lookups are index scans over the unsent rows (`outbox_unsent_lane`, `outbox_unsent_key`).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        schema: str,
        *,
        lane: str = MAIN_LANE,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        held_retry_interval: float = 0.05,
        sent_retention_seconds: float = 3600.0,
    ) -> None:
        """`held_retry_interval`: how soon to look again when rows of this lane wait for another lane's older rows
        with their key (the other relay does not wake this one)."""
        self.pool = pool
        self.producer = producer
        self.schema = schema
        self.lane = lane
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.held_retry_interval = held_retry_interval
        self.sent_retention_seconds = sent_retention_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.healthy = True
        # Whether the last round found rows of the lane unsent but none publishable (they wait for older rows with
        # their key in another lane): the next look comes after held_retry_interval, not poll_interval.
        self.held = False
        # The main lane keeps the advisory lock key of the relay before lanes (one schema, one relay), so an older
        # replica and a newer one still exclude each other during a rolling upgrade.
        self._lock_name = f"signoff.outbox.{schema}" + ("" if lane == MAIN_LANE else f".{lane}")

    @property
    def _claim_sql(self) -> str:
        # OFFSET 0 keeps the NOT EXISTS a probe of outbox_unsent_key per candidate row (at most batch_size of
        # them): pulled up into an anti-join, the planner hashes the other lanes' unsent rows, found by a scan of
        # the whole table, sent rows included.
        return f"""SELECT o.seq, o.id, o.aggregatetype, o.key, o.payload, o.headers FROM "{self.schema}".outbox o
            WHERE o.sent_at IS NULL AND o.lane = $2
              AND NOT EXISTS (
                  SELECT FROM "{self.schema}".outbox p
                  WHERE p.sent_at IS NULL AND p.key = o.key AND p.seq < o.seq AND p.lane <> $2
                  OFFSET 0)
            ORDER BY o.seq LIMIT $1 FOR UPDATE OF o SKIP LOCKED"""  # noqa: S608

    async def explain_claim(self, conn: asyncpg.Connection) -> list[str]:
        """PostgreSQL's plan (EXPLAIN, not run) of the lane's claim: index scans of the unsent rows, however many."""
        rows = await conn.fetch(f"EXPLAIN {self._claim_sql}", self.batch_size, self.lane)
        return [row[0] for row in rows]

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows of the lane; returns how many (0 when none is publishable yet, or
        another replica holds the lead). A lane other than the main one is priority work (see
        signoff.runtime.cooperative): the role's other loops make way while it publishes."""
        if self.lane == MAIN_LANE:
            return await self._publish_pending()
        with priority_work():
            return await self._publish_pending()

    async def _publish_pending(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            lead = await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1::text))", self._lock_name)
            if not lead:
                self.held = False  # another replica publishes this lane
                return 0
            # Within the lane the batch goes out in seq order; a row whose key has an older unsent row in another
            # lane waits for it (and so does every later row of that key, which has the same older row).
            rows = await conn.fetch(self._claim_sql, self.batch_size, self.lane)
            if not rows:
                self.held = bool(
                    await conn.fetchval(
                        f"""SELECT EXISTS (SELECT FROM "{self.schema}".outbox
                                           WHERE sent_at IS NULL AND lane = $1)""",  # noqa: S608
                        self.lane,
                    )
                )
                return 0
            self.held = False
            await self._send(rows)
            await self._mark_sent(conn, [row["seq"] for row in rows])
        OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def _send(self, rows: Sequence[asyncpg.Record]) -> None:
        deliveries = []
        for index, row in enumerate(rows):
            await cooperate(index)  # handing records to the producer does not suspend
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
                while await self.publish_pending() or self.held:
                    if self.held:  # the rest waits for older rows of its keys that another lane's relay drains
                        await asyncio.sleep(self.held_retry_interval)

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
        channel = notify_channel(self.schema, self.lane)

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
                    # The main relay keeps the schema's books (the gauge counts every lane); at the first round
                    # too, so the backlog gauge exists from the start.
                    if self.lane == MAIN_LANE and loops % 60 == 1:
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
                    await asyncio.wait_for(
                        self._wake.wait(), self.held_retry_interval if self.held else self.poll_interval
                    )
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(channel, wake)
            await self.pool.release(listener)
