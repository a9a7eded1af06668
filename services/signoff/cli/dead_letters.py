"""`signoff dead-letters`: what the consumers gave up on, read from the dead-letter topic (an operator's command).

It reads the whole topic as a plain reader: no consumer group, nothing committed, every partition from its
beginning. The embedded dev broker (Tansu) does not report end offsets reliably, so reading stops at the end offsets
only when they look sane (reached exactly, then a fetch that returns nothing), otherwise once a fetch has returned
nothing for IDLE_SECONDS after the last record, and in any case after READ_DEADLINE_SECONDS.

The original value is never printed unless asked for (`--show-value`): it may hold personal data.

`signoff dead-letters replay` publishes chosen dead letters again to the topic they came from, once what refused
them is fixed: the original key, value and headers, without the `signoff-dlq-*` ones, plus `signoff-replayed-from`
(where the dead letter was). Replaying is safe for every consumer of that topic: one that applied the event already
skips it (its inbox knows the event's source and id), and one that refuses it again dead-letters it again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from signoff.cli.errors import CliError
from signoff.cli.plumbing import cli_settings, echo_json
from signoff.cli.terminal import echo
from signoff.contracts.envelope import BINARY_HEADER_PREFIX
from signoff.contracts.topics import (
    DEAD_LETTER_TOPIC,
    DLQ_HEADER_CONSUMER,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_FAILED_AT,
    DLQ_HEADER_ORIGINAL_OFFSET,
    DLQ_HEADER_ORIGINAL_PARTITION,
    DLQ_HEADER_ORIGINAL_TOPIC,
    DLQ_HEADER_PREFIX,
    DLQ_HEADER_REASON,
)
from signoff.runtime.kafka import MAX_REQUEST_BYTES, connection_options, make_producer
from signoff.runtime.settings import Settings

IDLE_SECONDS = 2.0
"""Reading stops once a fetch has returned nothing for this long after the last record."""
READ_DEADLINE_SECONDS = 120.0
"""…and in any case after this long (a topic written faster than it is read): said on stderr."""
FETCH_TIMEOUT_MS = 250
ERROR_MAX_CHARS = 200
VALUE_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, as the command shows it."""

    partition: int
    offset: int
    timestamp: int | None
    failed_at: str | None
    consumer: str | None
    reason: str | None
    original_topic: str | None
    original_partition: int | str | None
    original_offset: int | str | None
    event_id: str | None
    event_type: str | None
    error: str | None
    key: str | None
    headers: list[list[str]]
    value: str | None
    """The original value, cut to VALUE_MAX_CHARS; None unless `--show-value`."""
    record: ConsumerRecord | None = field(default=None, compare=False, repr=False)
    """The dead letter as read (what `replay` publishes again)."""

    def as_json(self, *, show_value: bool) -> dict[str, Any]:
        fields = {
            "failed_at": self.failed_at,
            "consumer": self.consumer,
            "reason": self.reason,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "error": self.error,
            "key": self.key,
            "headers": self.headers,
            "partition": self.partition,
            "offset": self.offset,
        }
        if show_value:
            fields["value"] = self.value
        return fields

    def sort_key(self) -> tuple[datetime, int, int]:
        moment = _parse_time(self.failed_at)
        if moment is None and self.timestamp is not None:
            moment = datetime.fromtimestamp(self.timestamp / 1000, UTC)
        return (moment or datetime.min.replace(tzinfo=UTC), self.partition, self.offset)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _int_or_text(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _cloudevent(value: bytes | None, headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The id and type of the original CloudEvent, best effort: binary mode (`ce_*` headers) or a JSON object with
    them (structured mode); (None, None) for anything else, never an error."""
    if f"{BINARY_HEADER_PREFIX}id" in headers or f"{BINARY_HEADER_PREFIX}type" in headers:
        return headers.get(f"{BINARY_HEADER_PREFIX}id"), headers.get(f"{BINARY_HEADER_PREFIX}type")
    if not value or value.lstrip()[:1] != b"{":
        return None, None
    try:
        envelope = json.loads(value)
    except (ValueError, RecursionError):  # malformed JSON, invalid UTF-8, nesting too deep…
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    event_id, event_type = envelope.get("id"), envelope.get("type")
    return (
        event_id if isinstance(event_id, str) else None,
        event_type if isinstance(event_type, str) else None,
    )


def dead_letter(record: ConsumerRecord, *, show_value: bool) -> DeadLetter:
    """What the command shows of `record`. A header set twice (a record dead-lettered, replayed, refused again)
    counts by its last occurrence, the latest trip."""
    pairs = [(name, _text(value) or "") for name, value in record.headers or ()]
    last = dict(pairs)
    event_id, event_type = _cloudevent(record.value, last)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        failed_at=last.get(DLQ_HEADER_FAILED_AT),
        consumer=last.get(DLQ_HEADER_CONSUMER),
        reason=last.get(DLQ_HEADER_REASON),
        original_topic=last.get(DLQ_HEADER_ORIGINAL_TOPIC),
        original_partition=_int_or_text(last.get(DLQ_HEADER_ORIGINAL_PARTITION)),
        original_offset=_int_or_text(last.get(DLQ_HEADER_ORIGINAL_OFFSET)),
        event_id=event_id,
        event_type=event_type,
        error=last.get(DLQ_HEADER_ERROR),
        key=_text(record.key),
        headers=[[name, value] for name, value in pairs],
        value=_one_line(_text(record.value) or "", VALUE_MAX_CHARS) if show_value else None,
        record=record,
    )


def line(letter: DeadLetter) -> str:
    """One line: when, who gave up, why, where the record came from, the event if it was one, the error (cut)."""
    where = f"{letter.original_topic or '-'}[{_dash(letter.original_partition)}]@{_dash(letter.original_offset)}"
    event = ""
    if letter.event_id or letter.event_type:
        event = f"  event {letter.event_id or '-'} ({letter.event_type or '-'})"
    error = _one_line(letter.error, ERROR_MAX_CHARS) if letter.error else "-"
    return f"{letter.failed_at or '-'}  {letter.consumer or '-'}  {letter.reason or '-'}  {where}{event}  {error}"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


class _Unreachable(Exception):
    """The broker could not be reached (the message: why, when it says more than that)."""


@contextlib.contextmanager
def _quiet_client() -> Iterator[None]:
    """aiokafka's own log lines (a failed connection is logged before it is raised) off for the command: its
    failure is the one `error:` line."""
    logger = logging.getLogger("aiokafka")
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled


async def read_topic(settings: Settings, topic: str, *, show_value: bool) -> list[DeadLetter] | None:
    """Every record of `topic` (None when the broker has no such topic), read without a consumer group."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings),
        group_id=None,
        client_id="signoff-dead-letters",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        fetch_max_bytes=8 * MAX_REQUEST_BYTES,
    )
    try:
        try:
            await consumer.start()
            known = await consumer.topics()  # the cluster's metadata
        except (KafkaConnectionError, OSError):
            raise _Unreachable("") from None
        except KafkaError as exc:  # e.g. SASL refused
            raise _Unreachable(str(exc) or type(exc).__name__) from None
        if topic not in known:
            return None
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return None
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await _read(consumer, partitions, show_value=show_value)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _end_offsets(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offsets, if the broker gives sane ones (an end behind its beginning is not); {} otherwise."""
    try:
        beginnings = await consumer.beginning_offsets(list(partitions))
        ends = await consumer.end_offsets(list(partitions))
    except (KafkaError, OSError, TimeoutError):
        return {}
    if set(ends) != set(partitions) or any(ends[tp] < beginnings.get(tp, 0) for tp in partitions):
        return {}
    # A topic that claims to be empty is not believed: it may just be the broker's unreliable answer.
    if all(ends[tp] == beginnings.get(tp, 0) for tp in partitions):
        return {}
    return dict(ends)


async def _read(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], *, show_value: bool
) -> list[DeadLetter]:
    clock = asyncio.get_running_loop()
    started = clock.time()
    ends = await _end_offsets(consumer, partitions)
    letters: list[DeadLetter] = []
    last_record = clock.time()
    while True:
        batches = await consumer.getmany(*partitions, timeout_ms=FETCH_TIMEOUT_MS, max_records=5000)
        got = 0
        for records in batches.values():
            got += len(records)
            letters.extend(dead_letter(record, show_value=show_value) for record in records)
        now = clock.time()
        if got:
            last_record = now
        if ends:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if any(positions[tp] > ends[tp] for tp in partitions):
                ends = {}  # read past what the broker called the end: its end offsets are wrong, wait for quiet
            elif not got and all(positions[tp] >= ends[tp] for tp in partitions):
                break
        if not got and now - last_record >= IDLE_SECONDS:
            break
        if now - started >= READ_DEADLINE_SECONDS:
            echo(
                f"warning: stopped reading after {READ_DEADLINE_SECONDS:.0f} s: the topic is still being written",
                err=True,
            )
            break
    return letters


def _settings() -> Settings:
    return cli_settings(Settings)


def _read_or_fail(settings: Settings, topic: str, *, show_value: bool) -> list[DeadLetter]:
    """Every dead letter of `topic`; CliError when the broker cannot be reached or read."""
    try:
        with _quiet_client():
            read = asyncio.run(read_topic(settings, topic, show_value=show_value))
    except _Unreachable as exc:
        why = f": {_one_line(str(exc), 300)}" if str(exc) else ""
        raise CliError(f"cannot reach the broker at {settings.kafka_bootstrap}{why}") from None
    except KafkaError as exc:
        raise CliError(f"reading {topic} failed: {_one_line(str(exc) or type(exc).__name__, 300)}") from None
    if read is None:
        echo(f"note: the broker at {settings.kafka_bootstrap} has no topic {topic}", err=True)
        return []
    return read


def _matching(letters: list[DeadLetter], consumer: str | None, reason: str | None) -> list[DeadLetter]:
    return sorted(
        (
            letter
            for letter in letters
            if (consumer is None or letter.consumer == consumer) and (reason is None or letter.reason == reason)
        ),
        key=DeadLetter.sort_key,
    )


_CONSUMER = click.option("--consumer", help="Only those this consumer (group) gave up on, e.g. signoff-approval.")
_REASON = click.option(
    "--reason",
    help="Only those with this reason (malformed_json, not_cloudevent, invalid_envelope, unknown_type, invalid_data, "
    "too_large, handler_error, or a consumer's own code).",
)
_TOPIC = click.option("--topic", default=DEAD_LETTER_TOPIC, hidden=True, help="Read this topic instead (tests).")


@click.group("dead-letters", invoke_without_command=True)
@_CONSUMER
@_REASON
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show the newest N (newest last); the summary counts them all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--show-value", is_flag=True, help="Also show each original value (cut): it may hold personal data.")
@_TOPIC
@click.pass_context
def dead_letters(
    ctx: click.Context,
    consumer: str | None,
    reason: str | None,
    limit: int,
    as_json: bool,
    show_value: bool,
    topic: str,
) -> None:
    """Show the records the consumers dead-lettered: when, who, why, from where, and the error (`replay`: publish
    chosen ones again)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    matching = _matching(_read_or_fail(settings, topic, show_value=show_value), consumer, reason)
    shown = matching[-limit:]
    if as_json:
        echo_json([letter.as_json(show_value=show_value) for letter in shown])
        return
    if not matching:
        echo("no dead letters")
        return
    for letter in shown:
        echo(line(letter))
        if show_value:
            echo(f"    value: {letter.value}")
    counts = Counter(letter.reason or "-" for letter in matching)
    summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
    total = f"{len(matching)} dead letter{'s' if len(matching) != 1 else ''}"
    newest = f" (the newest {len(shown)} shown)" if len(shown) < len(matching) else ""
    echo(f"{total}{newest}: {summary}")


REPLAYED_FROM_HEADER = "signoff-replayed-from"
"""Set on a replayed record: the dead letter it was published from, `topic[partition]@offset`."""


def _position(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise click.BadParameter(f"{text!r} is not PARTITION:OFFSET (e.g. 0:17)", param_hint="--at")
    return int(partition), int(offset)


def replay_headers(record: ConsumerRecord, dead_letter_topic: str) -> list[tuple[str, bytes]]:
    """The original headers of a dead letter (its `signoff-dlq-*` ones dropped), and where it was replayed from."""
    kept = [(name, value) for name, value in record.headers or () if not name.startswith(DLQ_HEADER_PREFIX)]
    where = f"{dead_letter_topic}[{record.partition}]@{record.offset}"
    return [*kept, (REPLAYED_FROM_HEADER, where.encode())]


async def _publish(settings: Settings, letters: list[DeadLetter], dead_letter_topic: str) -> None:
    producer = make_producer(settings, "signoff-dead-letters-replay")
    try:
        await producer.start()
    except (KafkaConnectionError, OSError):
        raise _Unreachable("") from None
    try:
        for letter in letters:
            assert letter.record is not None and letter.original_topic is not None
            record = letter.record
            await producer.send_and_wait(
                letter.original_topic,
                record.value,
                key=record.key,
                headers=replay_headers(record, dead_letter_topic),
            )
            echo(f"replayed {dead_letter_topic}[{record.partition}]@{record.offset} to {letter.original_topic}")
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


@dead_letters.command("replay")
@_CONSUMER
@_REASON
@click.option(
    "--at",
    "positions",
    multiple=True,
    metavar="PARTITION:OFFSET",
    help="Only the dead letter at this position of the dead-letter topic (the `partition` and `offset` of "
    "`dead-letters --json`); repeatable.",
)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (the filters above narrow it).")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed, publish nothing.")
@_TOPIC
def replay(
    consumer: str | None,
    reason: str | None,
    positions: tuple[str, ...],
    everything: bool,
    dry_run: bool,
    topic: str,
) -> None:
    """Publish the chosen dead letters again to the topics they came from (their key, value and headers), oldest
    first, once what refused them is fixed. Consumers that applied an event already skip it."""
    wanted = {_position(text) for text in positions}
    if not (consumer or reason or wanted or everything):
        raise click.UsageError("say which dead letters to replay: --consumer, --reason, --at, or --all")
    settings = _settings()
    chosen = [
        letter
        for letter in _matching(_read_or_fail(settings, topic, show_value=False), consumer, reason)
        if not wanted or (letter.partition, letter.offset) in wanted
    ]
    missing = wanted - {(letter.partition, letter.offset) for letter in chosen}
    if missing:
        where = ", ".join(f"{p}:{o}" for p, o in sorted(missing))
        raise CliError(f"no dead letter at {where} (with the filters given); nothing replayed")
    unknown_origin = [letter for letter in chosen if not letter.original_topic]
    if unknown_origin:
        first = unknown_origin[0]
        raise CliError(f"the dead letter at {first.partition}:{first.offset} names no original topic; nothing replayed")
    if not chosen:
        echo("no dead letters to replay")
        return
    if dry_run:
        for letter in chosen:
            echo(f"would replay {topic}[{letter.partition}]@{letter.offset} to {letter.original_topic}: {line(letter)}")
        echo(f"{len(chosen)} dead letter{'s' if len(chosen) != 1 else ''} would be replayed")
        return
    try:
        with _quiet_client():
            asyncio.run(_publish(settings, chosen, topic))
    except _Unreachable:
        raise CliError(f"cannot reach the broker at {settings.kafka_bootstrap}") from None
    except KafkaError as exc:
        raise CliError(f"replaying failed: {_one_line(str(exc) or type(exc).__name__, 300)}") from None
    echo(f"{len(chosen)} dead letter{'s' if len(chosen) != 1 else ''} replayed")
