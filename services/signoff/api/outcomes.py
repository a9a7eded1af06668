"""How the api learns the approval service's answer to a decision it published.

The approval service is the source of truth: every decision it judges leaves an audit row (its vote or its refusal)
in the same transaction as the gate events it publishes. The api waits on that row. Gate events on the gates topic
are the doorbell: a listener reads every partition of the topic (no consumer group, nothing committed: each replica
answers its own requests) and wakes the waiter of the decision a `VoteRecorded` / `DecisionRefused` names, so an
answer costs one broker round trip instead of a polling interval. A slower poll of the audit trail backs it up, so a
missed or late event (a broker restart, a listener catching up) delays an answer but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from signoff import contracts as wire
from signoff.runtime.kafka import connection_options
from signoff.runtime.settings import Settings

log = structlog.get_logger(__name__)

FALLBACK_POLL_SECONDS = 0.5
_VOTE_RECORDED = wire.VoteRecorded.event_type.encode()
_DECISION_REFUSED = wire.DecisionRefused.event_type.encode()


class OutcomeWaiters:
    """Decision id -> the requests waiting for its answer. The listener rings; `wait` returns when the answer is
    in the database (checked at once, on every ring, and every FALLBACK_POLL_SECONDS)."""

    def __init__(self) -> None:
        self._events: dict[str, list[asyncio.Event]] = defaultdict(list)

    def ring(self, decision_id: str) -> None:
        """Wake whoever waits for `decision_id` (nobody: nothing happens)."""
        for event in self._events.get(decision_id, ()):
            event.set()

    def register(self, decision_id: str) -> asyncio.Event:
        """Wait for `decision_id` from now on: register before publishing, so no ring is missed."""
        event = asyncio.Event()
        self._events[decision_id].append(event)
        return event

    def unregister(self, decision_id: str, event: asyncio.Event) -> None:
        waiting = self._events.get(decision_id)
        if waiting is None:
            return
        with contextlib.suppress(ValueError):
            waiting.remove(event)
        if not waiting:
            del self._events[decision_id]

    async def wait(
        self, decision_id: str, event: asyncio.Event, answer: Callable[[], Awaitable[object | None]], timeout: float
    ) -> object | None:
        """`answer()` once it returns something, or None after `timeout` seconds. `event` is what `register`
        returned for `decision_id`; it is unregistered on return."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                found = await answer()
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(FALLBACK_POLL_SECONDS, remaining))
                event.clear()
        finally:
            self.unregister(decision_id, event)

    def __len__(self) -> int:
        return len(self._events)


class GateEventListener:
    """Reads the gates topic from its end, on every partition, and rings the waiters of the decisions it names."""

    def __init__(self, settings: Settings, topic: str, waiters: OutcomeWaiters, *, client_id: str) -> None:
        self.topic = topic
        self.waiters = waiters
        self.ready = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            **connection_options(settings),
            group_id=None,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )

    async def start(self) -> None:
        await self._consumer.start()
        partitions = await self._wait_for_partitions()
        self._consumer.assign(partitions)
        # From the end: answers to decisions published from now on are all this replica needs. (Were the broker to
        # report an end offset too low, older events are read and ignored; too high, the audit poll answers.)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)
        self.ready.set()

    async def _wait_for_partitions(self) -> list[TopicPartition]:
        for _ in range(100):
            numbers = self._consumer.partitions_for_topic(self.topic)
            if numbers:
                return [TopicPartition(self.topic, number) for number in sorted(numbers)]
            await self._consumer.force_metadata_update()  # type: ignore[no-untyped-call]
            await asyncio.sleep(
                0.1
            )  # metadata of a topic created a moment ago: a bounded retry, not a wait on an event
        raise RuntimeError(f"topic {self.topic} has no partitions")

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            except KafkaError as exc:  # the broker away: answers come from the audit poll meanwhile
                log.warning("gate_listener_fetch_failed", error=str(exc))
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    decision_id = _decision_of(record.value, record.headers)
                    if decision_id is not None:
                        self.waiters.ring(decision_id)

    async def stop(self) -> None:
        await self._consumer.stop()


def _decision_of(value: bytes | None, headers: list[tuple[str, bytes]] | None) -> str | None:
    """The decision id a gate event answers (VoteRecorded, DecisionRefused), else None; never raises."""
    if value is None:
        return None
    # Most gate events answer no decision (a burst opens thousands of gates): skip them without decoding.
    named = value + b"".join(v for k, v in headers or () if k == "ce_type")
    if _VOTE_RECORDED not in named and _DECISION_REFUSED not in named:
        return None
    try:
        event = wire.decode(value, list(headers or ()))
    except wire.ContractError:
        return None
    data = event.data
    if isinstance(data, wire.VoteRecorded):
        return data.vote.decision_id
    if isinstance(data, wire.DecisionRefused):
        return data.decision_id
    return None
