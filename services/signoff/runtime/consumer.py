"""The consumer loop every service runs on: fetch a batch, apply it in one database transaction with an inbox row
per event, commit the database, then commit the offsets.

- Duplicates (a redelivery after a crash between the two commits, a replayed event, a re-published outbox row)
  conflict on the inbox primary key (consumer, event id, source: CloudEvents' identity of an event) and are
  skipped.
- Records that fail validation are dead-lettered in the same transaction: an outbox row for the dead-letter topic
  plus an inbox row keyed by their position and a digest of their content (offsets are reused when a topic is
  recreated or a dev broker restarts empty: a new record at an old position is not a duplicate), so a redelivery
  neither loses nor duplicates them, and the valid records around them are applied.
- The dead-letter path cannot stop the loop: keys and headers are kept as bytes, and a refused record whose dead
  letter still cannot be written is quarantined (a row with the raw record) and consuming goes on; should even
  that fail, the record is logged in full at critical level. The loop never exits on a record.
- A handler error on a batch is retried one event at a time, so one poison event is dead-lettered alone instead of
  blocking its partition. Transient errors (the database or broker unreachable) retry with bounded backoff and
  never commit offsets for work that was not committed.
- stop() lets the batch in flight finish and commit; anything not committed is redelivered (and deduped).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from signoff.contracts import ContractError, Event, decode
from signoff.contracts.topics import DEAD_LETTER_TOPIC, dead_letter_headers
from signoff.runtime import tracing
from signoff.runtime.cooperative import cooperate, make_way, priority_work
from signoff.runtime.metrics import (
    BATCH_RETRIES,
    BATCH_SECONDS,
    CONSUMER_LAG,
    EVENTS_APPLIED,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_QUARANTINED,
)
from signoff.runtime.outbox import MAIN_LANE, OutboxRecord, OutboxWriter

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


@dataclass(frozen=True)
class Received:
    """A valid event and the record it came in."""

    event: Event
    record: ConsumerRecord

    @property
    def topic(self) -> str:
        return self.record.topic

    @property
    def partition(self) -> int:
        return self.record.partition

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def key(self) -> bytes | None:
        return self.record.key

    def log_context(self) -> dict[str, object]:
        return {
            "event_id": self.event.id,
            "event_type": self.event.type,
            "subject": self.event.subject,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


@dataclass
class UnitOfWork:
    """One database transaction: `conn` for the handler's SQL, `outbox` for the events it publishes, and
    `after_commit` for what must happen only once the transaction committed (counting metrics: a batch that rolls
    back and is retried, or isolated one event at a time, must not count twice)."""

    conn: asyncpg.Connection
    outbox: OutboxWriter
    after_commit: list[Callable[[], None]] = field(default_factory=list)


class BatchHandler(Protocol):
    """What a service plugs into the loop."""

    async def apply(self, uow: UnitOfWork, batch: Sequence[Received]) -> None:
        """Apply new (never seen before) events inside the open transaction; raise to refuse the whole batch.

        Set-based SQL over the whole batch is welcome (bursts of thousands of requests must be absorbed fast);
        the loop falls back to one event per call to isolate an event that makes this raise."""


class GivingUp(Protocol):
    """What a handler may add for an event its `apply` keeps failing on (a bug, a value the database refuses), in
    the transaction that dead-letters it: what its sender needs to hear so it does not wait forever (the approval
    service's RequestRefused, say). Optional: a handler without `gave_up` only dead-letters."""

    async def gave_up(self, uow: UnitOfWork, received: Received, error: str) -> None:
        """Called in the dead letter's transaction; if it raises, the event is dead-lettered without it."""


@dataclass
class _Refused:
    record: ConsumerRecord
    reason: str
    error: str
    received: Received | None = None  # decoded, yet `apply` failed on it (handler_error): the handler may tell

    @property
    def inbox_id(self) -> str:
        return dead_letter_id(self.record)

    @property
    def inbox_key(self) -> tuple[str, str]:
        return DEAD_LETTER_SOURCE, self.inbox_id


@dataclass
class LoopState:
    """What /readyz and /healthz read."""

    joined: bool = False
    last_iteration: float = field(default_factory=time.monotonic)
    failing_since: float | None = None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, state: LoopState, name: str) -> None:
        self.state, self.name = state, name

    async def on_partitions_revoked(self, revoked: object) -> None:
        log.info("partitions_revoked", consumer=self.name, partitions=sorted(str(tp) for tp in revoked))
        # Another replica owns these now and reports their lag: a series left here would count it twice.
        for tp in revoked:  # type: ignore[attr-defined]
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.state.joined = True
        log.info("partitions_assigned", consumer=self.name, partitions=sorted(str(tp) for tp in assigned))


class ConsumerLoop:
    """Consumes `topics` as consumer group `name` into `handler`, writing inbox and outbox rows in `schema` (inbox
    rows under `inbox_name`, the group's name unless told; outbox rows in `outbox_lane`, published by that lane's
    relay)."""

    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[str],
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        schema: str,
        handler: BatchHandler,
        max_batch: int = 1000,
        max_event_bytes: int = 512 * 1024,
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
        inbox_name: str | None = None,
        outbox_lane: str = MAIN_LANE,
    ) -> None:
        self.name = name
        # Whose inbox rows these are: the loop's name unless several loops of one role share one inbox (lanes).
        self.inbox_name = inbox_name or name
        # Whose relay publishes what this loop writes: a lane's outcomes must not wait behind the main loop's.
        self.outbox_lane = outbox_lane
        self.topics = list(topics)
        self.consumer = consumer
        self.pool = pool
        self.schema = schema
        self.handler = handler
        self.max_batch = max_batch
        self.max_event_bytes = max_event_bytes
        self.dead_letter_topic = dead_letter_topic
        self.state = LoopState()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop fetching; the batch in flight finishes and commits."""
        self._stopping.set()

    async def start(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self.state, self.name))
        await self.consumer.start()

    @property
    def priority(self) -> bool:
        """A lane's loop (its outbox lane is not the main one) is priority work: while it applies a batch, the
        role's other loops make way at their yield points (see signoff.runtime.cooperative)."""
        return self.outbox_lane != MAIN_LANE

    async def run(self) -> None:
        """Consume until stop(). The caller starts the consumer (start()) and stops it afterwards."""
        while not self._stopping.is_set():
            self.state.last_iteration = time.monotonic()
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.max_batch)
            records = [record for tp_records in batches.values() for record in tp_records]
            if not records:
                continue
            started = time.perf_counter()
            if not self.priority:
                await make_way()  # a lane's batch in flight goes first
            with priority_work() if self.priority else contextlib.nullcontext():
                await self.process(records)
                await self._commit_offsets(batches)
            BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            await self._record_lag(batches.keys())

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply one fetched batch to the database (retrying transient failures until it commits)."""
        valid, refused = await self._decode(records)
        if not tracing.enabled():
            await self._process(valid, refused)
            return
        # A CONSUMER span per event, continuing its traceparent; the event is handed on with the span's own
        # traceparent, so whatever the handler publishes or stores for it (forwarding the event's traceparent, as
        # it does with tracing off) continues under this span. A lone event's span is also current, for its logs.
        spans = [self._span(received) for received in valid]
        valid = [
            replace(received, event=replace(received.event, traceparent=tracing.traceparent_of(span)))
            for received, span in zip(valid, spans, strict=True)
        ]
        error: BaseException | None = None
        try:
            with tracing.use_span(spans[0] if len(spans) == 1 else None):
                await self._process(valid, refused)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for span in spans:
                tracing.end_span(span, error)

    def _span(self, received: Received) -> Span:
        event, record = received.event, received.record
        return tracing.start_consumer_span(
            f"process {event.type}",
            event.traceparent,
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.name,
                "messaging.message.id": event.id,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "cloudevents.event_source": event.source,
                "cloudevents.event_subject": event.subject,
            },
        )

    async def _process(self, valid: list[Received], refused: list[_Refused]) -> None:
        try:
            await self._retrying(lambda: self._apply_batch(valid, refused))
        except Exception as exc:  # the handler refused the batch: isolate the event(s) responsible
            log.warning("batch_failed_isolating", consumer=self.name, error=repr(exc), size=len(valid))
            await self._apply_one_by_one(valid, refused)

    async def _decode(self, records: Sequence[ConsumerRecord]) -> tuple[list[Received], list[_Refused]]:
        valid: dict[tuple[str, str], Received] = {}
        refused: list[_Refused] = []
        for topic, count in Counter(record.topic for record in records).items():
            EVENTS_CONSUMED.labels(self.name, topic).inc(count)
        for index, record in enumerate(records):
            await cooperate(index)  # validating 1,000 requests is CPU only: let another lane's decision in
            try:
                event = decode(record.value, record.headers or (), max_bytes=self.max_event_bytes)
            except ContractError as exc:
                refused.append(_Refused(record, exc.reason, str(exc)))
                continue
            # The same event twice in one batch is applied once (the inbox insert would also skip it).
            valid.setdefault(inbox_key(event), Received(event, record))
        return list(valid.values()), refused

    async def _apply_batch(self, valid: Sequence[Received], refused: Sequence[_Refused]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await self._claim(conn, valid, refused)
            uow = UnitOfWork(conn, OutboxWriter(self.schema, self.outbox_lane))
            new_events = [r for r in valid if inbox_key(r.event) in fresh]
            if new_events:
                await self.handler.apply(uow, new_events)
            new_refusals = [r for r in refused if r.inbox_key in fresh]
            for refusal in new_refusals:
                uow.outbox.add(self._dead_letter(refusal))
                gave_up = getattr(self.handler, "gave_up", None)
                if refusal.received is not None and gave_up is not None:
                    await gave_up(uow, refusal.received, refusal.error)
            await uow.outbox.flush(conn)
        for callback in uow.after_commit:
            callback()
        self._report(valid, fresh, new_refusals)

    async def _apply_one_by_one(self, valid: Sequence[Received], refused: Sequence[_Refused]) -> None:
        if refused:
            try:
                await self._retrying(lambda: self._apply_batch([], refused))
            except Exception:
                for refusal in refused:  # find the one(s) whose dead letter cannot be written
                    await self._dead_letter_or_quarantine(refusal)
        for received in valid:
            try:
                await self._retrying(lambda r=received: self._apply_batch([r], []))
            except Exception as exc:
                refusal = _Refused(received.record, "handler_error", f"{type(exc).__name__}: {exc}", received)
                log.error("event_failed", consumer=self.name, **received.log_context(), error=repr(exc))
                await self._dead_letter_or_quarantine(refusal)

    async def _dead_letter_or_quarantine(self, refusal: _Refused) -> None:
        """Dead-letter one refused record; if the database refuses even that, quarantine it; if that fails too,
        log it in full. Returns normally in every case: the loop moves on, and the record is never dropped
        without a trace."""
        if refusal.received is not None:  # first with what the handler tells its sender (GivingUp)
            try:
                await self._retrying(lambda: self._apply_batch([], [refusal]))
                return
            except Exception as exc:
                log.error("gave_up_failed", consumer=self.name, **_position(refusal.record), error=repr(exc))
                refusal = replace(refusal, received=None)
        try:
            await self._retrying(lambda: self._apply_batch([], [refusal]))
            return
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            log.error("dead_letter_failed_quarantining", consumer=self.name, **_position(refusal.record), error=failure)
        try:
            await self._retrying(lambda: self._quarantine(refusal, failure))
        except Exception as exc:
            EVENTS_QUARANTINED.labels(self.name, "failed").inc()
            log.critical(
                "event_quarantine_failed",
                consumer=self.name,
                **_position(refusal.record),
                reason=refusal.reason,
                error=refusal.error[:500],
                quarantine_error=repr(exc),
                record=_raw(refusal.record),
            )

    async def _quarantine(self, refusal: _Refused, failure: str) -> None:
        record = refusal.record
        headers = list(record.headers or ())
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                f"""INSERT INTO "{self.schema}".inbox (consumer, event_id, source, topic, partition, "offset")
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING event_id""",  # noqa: S608
                self.inbox_name,
                refusal.inbox_id,
                DEAD_LETTER_SOURCE,
                record.topic,
                record.partition,
                record.offset,
            )
            if claimed is None:
                return  # dead-lettered or quarantined already (a redelivery)
            await conn.execute(
                f"""INSERT INTO "{self.schema}".quarantine (consumer, id, topic, partition, "offset", "timestamp",
                        key, value, header_names, header_values, reason, error)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",  # noqa: S608
                self.name,
                refusal.inbox_id,
                record.topic,
                record.partition,
                record.offset,
                record.timestamp,
                record.key,
                record.value,
                [name.encode() for name, _ in headers],
                [value for _, value in headers],
                _text(refusal.reason),
                _text(f"{refusal.error}\n(dead letter failed: {failure})"),
            )
        EVENTS_QUARANTINED.labels(self.name, refusal.reason).inc()
        log.error("event_quarantined", consumer=self.name, **_position(record), reason=refusal.reason)

    async def _retrying(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run `attempt` until it succeeds or fails for a reason other than a transient one (which it raises).

        Transient means the database or the network is down: nothing was committed, so nothing is lost, and the
        same work is retried with bounded backoff. Readiness turns false while this lasts."""
        delay = 0.1
        while True:
            try:
                await attempt()
                self.state.failing_since = None
                return
            except TRANSIENT_ERRORS as exc:
                self.state.failing_since = self.state.failing_since or time.monotonic()
                self.state.last_iteration = time.monotonic()  # alive, only waiting
                BATCH_RETRIES.labels(self.name).inc()
                log.warning("batch_retry", consumer=self.name, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _claim(
        self, conn: asyncpg.Connection, valid: Sequence[Received], refused: Sequence[_Refused]
    ) -> set[tuple[str, str]]:
        """Insert inbox rows for everything in the batch; returns the (source, id) keys that were not there yet.

        A row of source '' holds a dead letter's id, or an event's from before the inbox kept sources (runtime
        migration 0004): an event whose id it holds is a duplicate whatever its source."""
        keys = [inbox_key(r.event) for r in valid] + [r.inbox_key for r in refused]
        if not keys:
            return set()
        positions = [(r.topic, r.partition, r.offset) for r in valid] + [
            (r.record.topic, r.record.partition, r.record.offset) for r in refused
        ]
        rows = await conn.fetch(
            f"""INSERT INTO "{self.schema}".inbox (consumer, event_id, source, topic, partition, "offset")
                SELECT $1, i.* FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[])
                    AS i(event_id, source, topic, partition, "offset")
                WHERE i.source = '' OR NOT EXISTS (
                    SELECT 1 FROM "{self.schema}".inbox b
                    WHERE b.consumer = $1 AND b.event_id = i.event_id AND b.source = '')
                ON CONFLICT DO NOTHING RETURNING source, event_id""",  # noqa: S608
            self.inbox_name,
            [key[1] for key in keys],
            [key[0] for key in keys],
            [p[0] for p in positions],
            [p[1] for p in positions],
            [p[2] for p in positions],
        )
        return {(row["source"], row["event_id"]) for row in rows}

    def _dead_letter(self, refusal: _Refused) -> OutboxRecord:
        return dead_letter_record(
            refusal.record,
            id=refusal.inbox_id,
            topic=self.dead_letter_topic,
            reason=refusal.reason,
            error=refusal.error,
            consumer=self.name,
        )

    def _report(self, valid: Sequence[Received], fresh: set[tuple[str, str]], refusals: Sequence[_Refused]) -> None:
        # One info line per batch (a burst of 50k requests must not cost 50k log lines); each event, with its
        # ids, at debug.
        applied: Counter[str] = Counter()
        duplicate_ids: list[str] = []
        each_event = log.is_enabled_for(logging.DEBUG)  # building every event's context costs, even when dropped
        for received in valid:
            if inbox_key(received.event) in fresh:
                applied[received.event.type] += 1
                if each_event:
                    log.debug("event_applied", consumer=self.name, **received.log_context())
            else:
                duplicate_ids.append(received.event.id)
                if each_event:
                    log.debug("event_duplicate_skipped", consumer=self.name, **received.log_context())
        for event_type, count in applied.items():
            EVENTS_APPLIED.labels(self.name, event_type).inc(count)
        duplicates = len(duplicate_ids)
        if duplicates:
            EVENTS_DUPLICATE.labels(self.name).inc(duplicates)
            log.info(
                "event_duplicate_skipped",
                consumer=self.name,
                count=duplicates,
                event_ids=duplicate_ids[:_IDS_LOGGED],
            )
        if valid or refusals:
            positions: dict[str, list[int]] = {}
            for received in valid:
                positions.setdefault(f"{received.record.topic}/{received.record.partition}", []).append(
                    received.record.offset
                )
            log.info(
                "batch_applied",
                consumer=self.name,
                applied=applied.total(),
                duplicates=duplicates,
                dead_lettered=len(refusals),
                offsets={where: f"{min(seen)}-{max(seen)}" for where, seen in positions.items()},
            )
        for refusal in refusals:
            EVENTS_DEAD_LETTERED.labels(self.name, refusal.reason).inc()
            log.warning(
                "event_dead_lettered",
                consumer=self.name,
                topic=refusal.record.topic,
                partition=refusal.record.partition,
                offset=refusal.record.offset,
                reason=refusal.reason,
                error=refusal.error[:500],
            )

    async def _commit_offsets(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions away: the database already has the batch, and whoever consumes
            # these offsets next skips it through the inbox.
            log.warning("offset_commit_failed", consumer=self.name, error=repr(exc))

    async def _record_lag(self, partitions) -> None:
        for tp in partitions:
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self.consumer.position(tp)
            except KafkaError:
                continue
            CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, highwater - position))


_IDS_LOGGED = 20
"""How many event ids a once-per-batch log line lists (the rest are counted)."""

_NONE = (2**64 - 1).to_bytes(8, "big")  # a length no field can have: None differs from b""


def record_digest(record: ConsumerRecord) -> str:
    """SHA-256 (hex) of what identifies a record besides its position: key, value, headers and timestamp, each
    length-prefixed so no two different records share an encoding."""
    digest = hashlib.sha256()

    def part(data: bytes | None) -> None:
        if data is None:
            digest.update(_NONE)
        else:
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)

    part(record.key)
    part(record.value)
    headers = list(record.headers or ())
    digest.update(len(headers).to_bytes(8, "big"))
    for name, value in headers:
        part(name.encode())
        part(value)
    digest.update(int(record.timestamp if record.timestamp is not None else -1).to_bytes(8, "big", signed=True))
    return digest.hexdigest()


DEAD_LETTER_SOURCE = ""
"""The inbox source of a dead letter's row (its id is the record's position and digest, not an event's)."""


def inbox_key(event: Event) -> tuple[str, str]:
    """What the inbox remembers an event by: its source and id (CloudEvents: unique together, not apart)."""
    return event.source, event.id


def dead_letter_id(record: ConsumerRecord) -> str:
    """The inbox and outbox id of `record`'s dead letter: its position plus a digest of its content. Offsets are
    reused (a recreated topic, a dev broker that keeps nothing while PostgreSQL keeps its inbox), so the position
    alone would take a new bad record at an old offset for a duplicate and drop it."""
    return f"dlq:{record.topic}:{record.partition}:{record.offset}:{record_digest(record)[:32]}"


def _position(record: ConsumerRecord) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _text(value: str) -> str:
    """`value` storable as PostgreSQL text (which cannot hold a NUL)."""
    return value.replace("\x00", "\\x00")


def _raw(record: ConsumerRecord) -> dict[str, object]:
    """The record in full, base64 where it is bytes: what a log line keeps of a record nothing else could."""

    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()

    return {
        "timestamp": record.timestamp,
        "key": b64(record.key),
        "value": b64(record.value),
        "headers": [[b64(name.encode()), b64(value)] for name, value in record.headers or ()],
    }


def dead_letter_record(
    record: ConsumerRecord, *, id: str, topic: str, reason: str, error: str, consumer: str
) -> OutboxRecord:
    """The outbox row that copies `record` (value, key and headers as they came) to the dead-letter `topic`, with
    its original topic / partition / offset, the reason, the error and the consumer in headers. For handlers that
    refuse a valid event themselves; the loop uses it for what it cannot decode."""
    return OutboxRecord(
        id=id,
        topic=topic,
        key=record.key,
        type="dead-letter",
        value=record.value or b"",
        headers=[
            *(record.headers or ()),
            *dead_letter_headers(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=reason,
                error=error,
                consumer=consumer,
            ),
        ],
    )


INBOX_PRUNE_CHUNK = 10_000  # rows per DELETE: a large first prune holds no long lock and makes no huge WAL burst


async def prune_inbox(conn: asyncpg.Connection, schema: str, retention: timedelta) -> int:
    """Delete the inbox rows received more than `retention` ago (by the database's clock, which stamped them), in
    chunks; returns how many were deleted.

    An event id the inbox forgot is applied again if its record comes back, so the retention must exceed the
    topics' (`SIGNOFF_INBOX_RETENTION_DAYS`); the handlers' own keys (a gate's natural key, a decision id) still
    refuse most repeats.
    """
    deleted = 0
    while True:
        status = await conn.execute(
            f"""DELETE FROM "{schema}".inbox WHERE ctid IN (
                    SELECT ctid FROM "{schema}".inbox WHERE received_at < now() - $1::interval LIMIT $2)""",  # noqa: S608
            retention,
            INBOX_PRUNE_CHUNK,
        )
        count = int(status.split()[-1])
        deleted += count
        if count < INBOX_PRUNE_CHUNK:
            return deleted
