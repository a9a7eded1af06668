"""The scenarios R1..R5: a workload on the real topics of a supervised dev stack, faults injected while it runs,
and counts of what was lost, doubled or stuck (each count must be 0).

- R1: kill -9 of each role at random moments (batches in flight) while requests, then decisions, are consumed.
- R2: every request and every decision published three times: one gate, one vote, one outcome each.
- R3: a malformed flood (NUL bytes in keys and header names, 900 KB values, wrong types, broken JSON) among valid
  requests: every valid one applied, every bad one dead-lettered with a reason, the consumer lag back to 0.
- R4: PostgreSQL frozen (SIGSTOP of its processes) then resumed, readiness flips and recovers; the broker killed
  and restarted by the supervisor (empty: memory storage); everything the broker kept is applied.
- R5: a burst of requests under a steady decision load: every gate opened, every decided gate resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from signoff import contracts as wire
from signoff.bench import workload
from signoff.chaos.stack import ChaosError, SupervisedStack
from signoff.cli.roles import ROLES
from signoff.contracts.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_GATES,
    APPROVAL_REQUESTS,
    DEAD_LETTER_TOPIC,
    DLQ_HEADER_ORIGINAL_OFFSET,
    DLQ_HEADER_ORIGINAL_PARTITION,
    DLQ_HEADER_ORIGINAL_TOPIC,
    DLQ_HEADER_REASON,
)
from signoff.devstack.stack import KEYS_FILE
from signoff.runtime.kafka import make_producer
from signoff.runtime.settings import Settings

REQUESTS, DECISIONS, GATES = APPROVAL_REQUESTS.name, APPROVAL_DECISIONS.name, APPROVAL_GATES.name
CE = ("content-type", b"application/cloudevents+json")
POLL = 0.2


@dataclass(frozen=True)
class ChaosOptions:
    """Counts of one run (the defaults are the full run of docs/reliability.md)."""

    requests: int = 3_000
    decisions: int = 1_500
    kills: int = 9
    duplicated: int = 500
    malformed: int = 5_000
    valid_among: int = 500
    large: int = 20
    freeze_seconds: float = 10.0
    burst: int = 20_000
    rate: float = 200.0
    burst_decisions: int = 1_500
    seed: int = 15
    timeout: float = 900.0


@dataclass
class Result:
    """One scenario's row: what was done, and each problem counted (0 = none)."""

    id: str
    what: str
    problems: dict[str, int]

    @property
    def ok(self) -> bool:
        return all(count == 0 for count in self.problems.values())


class Suite:
    def __init__(self, stack: SupervisedStack, options: ChaosOptions, say: Callable[[str], None]) -> None:
        self.stack = stack
        self.options = options
        self.say = say
        self.random = random.Random(options.seed)
        env = stack.settings_env
        self.settings = Settings(
            kafka_bootstrap=env["SIGNOFF_KAFKA_BOOTSTRAP"],
            kafka_enable_idempotence=False,
            database_url=env["SIGNOFF_DATABASE_URL"],
        )
        # The suite publishes decisions as the api role would (an approver's client holds no key): it signs with
        # the stack's own api key, kept owner-only in the state folder.
        self.key = json.loads((stack.state_dir / KEYS_FILE).read_text())["api"].encode()
        self.run_id = f"{int(time.time()) % 100_000:05d}"
        self.producer: AIOKafkaProducer | None = None
        self.pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> Suite:
        self.producer = make_producer(self.settings, "signoff-chaos")
        await self.producer.start()
        self.pool = await asyncpg.create_pool(self.settings.database_url.get_secret_value(), min_size=1, max_size=4)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    # ------------------------------------------------------------------------------------------------ workload

    async def _send(self, topic: str, messages: Sequence[workload.Message], copies: int = 1) -> list[int]:
        """Publish every message `copies` times; returns the offsets of the first copies."""
        assert self.producer is not None
        futures = []
        for key, value, headers in messages:
            for _ in range(copies):
                futures.append(await self.producer.send(topic, value, key=key, headers=headers))
        sent = await asyncio.gather(*futures)
        return [meta.offset for meta in sent[::copies]]

    async def _paced(self, topic: str, messages: Sequence[workload.Message], rate: float) -> None:
        assert self.producer is not None
        started = time.monotonic()
        for index, (key, value, headers) in enumerate(messages):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load
            await self.producer.send(topic, value, key=key, headers=headers)
        await self.producer.flush()

    async def _fetchval(self, sql: str, *args: object) -> int:
        assert self.pool is not None
        return int(await self.pool.fetchval(sql, *args) or 0)

    async def _until(self, what: str, check: Callable[[], object], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.options.timeout)
        while not await check():
            if time.monotonic() > deadline:
                raise ChaosError(f"timed out waiting for {what}")
            await asyncio.sleep(POLL)  # sampling the database: there is no event to wait on

    async def gates(self, pipeline: str, status: str | None = None) -> int:
        return await self._fetchval(
            "SELECT count(*) FROM approval.gates WHERE pipeline_id = $1 AND ($2::text IS NULL OR status = $2)",
            pipeline,
            status,
        )

    async def tokens(self, pipeline: str, count: int) -> list[tuple[str, str]]:
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT id, token FROM approval.gates WHERE pipeline_id = $1 AND status = 'pending' ORDER BY id LIMIT $2",
            pipeline,
            count,
        )
        return [(row["id"], row["token"]) for row in rows]

    def decisions(self, gates: Sequence[tuple[str, str]]) -> list[workload.Message]:
        return [workload.decision(gate_id, token, self.key, source="api") for gate_id, token in gates]

    async def drained(self) -> bool:
        """Every outbox published (what the roles wrote is on the broker)."""
        unsent = 0
        for schema in ("approval", "executor", "notifier"):
            unsent += await self._fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")  # noqa: S608
        return unsent == 0

    async def gate_events(self, pipeline: str) -> dict[str, dict[str, set[str]]]:
        """gate id -> event type -> distinct event ids, for `pipeline`'s gates, read from the gates topic."""
        found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for record in await self._read_all(GATES):
            try:
                event = wire.decode(record.value, list(record.headers))
            except wire.ContractError:
                continue
            key = getattr(event.data, "key", None)
            if key is not None and key.pipeline_id == pipeline:
                found[event.data.gate_id][event.type].add(event.id)
        return found

    async def _read_all(self, topic: str) -> list:
        """Every record of `topic` up to its current highwater marks."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        records = []
        try:
            await consumer.topics()  # fetches the cluster's metadata
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            idle = 0
            while idle < 3:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                got = sum(len(batch) for batch in batches.values())
                records.extend(record for batch in batches.values() for record in batch)
                done = True
                for tp in partitions:
                    high = consumer.highwater(tp)
                    done = done and high is not None and await consumer.position(tp) >= high
                idle = idle + 1 if got == 0 and done else 0
        finally:
            await consumer.stop()
        return records

    async def duplicate_deliveries(self, pipeline: str) -> int:
        return await self._fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM notifier.deliveries d JOIN approval.gates g ON g.id = d.gate_id
                   WHERE g.pipeline_id = $1 GROUP BY d.gate_id, d.kind, d.purpose, d.channel, d.recipient
                   HAVING count(*) > 1) AS doubled""",
            pipeline,
        )

    async def votes(self, pipeline: str) -> int:
        return await self._fetchval(
            """SELECT count(*) FROM approval.votes v JOIN approval.gates g ON g.id = v.gate_id
               WHERE g.pipeline_id = $1""",
            pipeline,
        )

    async def _killing(self, spacing: float) -> list[str]:
        """kill -9 of the roles in turn (each at least once), every ~`spacing` seconds (randomised); returns whom
        it killed."""
        order = list(ROLES)
        self.random.shuffle(order)
        killed: list[str] = []
        while len(killed) < max(self.options.kills, len(order)):
            await asyncio.sleep(self.random.uniform(0.2, 2 * spacing))  # a random moment: the fault schedule
            role = order[len(killed) % len(order)]
            try:
                self.stack.kill(role)
            except ProcessLookupError:
                continue  # restarting right now
            killed.append(role)
        return killed

    # ------------------------------------------------------------------------------------------------ scenarios

    async def r1_kills(self) -> Result:
        o = self.options
        pipeline = f"chaos-r1-{self.run_id}"
        self.say(f"R1: {o.requests:,} requests then {o.decisions:,} decisions, kill -9 of the roles meanwhile")
        killer = asyncio.create_task(self._killing(spacing=0.8))
        await self._send(REQUESTS, workload.requests(pipeline, o.requests))
        await self._until("R1 gates", lambda: self._equals(self.gates(pipeline), o.requests))
        gates = await self.tokens(pipeline, o.decisions)
        await self._paced(DECISIONS, self.decisions(gates), rate=o.rate)
        decided = {gate_id for gate_id, _ in gates}
        killed = await killer  # every kill happened while the work was in flight

        async def resolved() -> bool:
            return await self._fetchval(
                "SELECT count(*) FROM approval.gates WHERE id = ANY($1::text[]) AND status = 'approved'",
                list(decided),
            ) == len(decided)

        await self._until("R1 outcomes", resolved)
        await self._until("outboxes drained", self.drained)
        events = await self.gate_events(pipeline)
        opened = sum(1 for by_type in events.values() if by_type.get(wire.GateOpened.event_type))
        outcomes = [len(by_type.get(wire.GateApproved.event_type, ())) for by_type in events.values()]
        return Result(
            "R1",
            f"kill -9 of each role at random moments ({', '.join(killed)}) during {o.requests:,} requests + "
            f"{o.decisions:,} decisions",
            {
                "gates lost": o.requests - await self.gates(pipeline),
                "GateOpened lost": o.requests - opened,
                "votes lost": len(decided) - await self.votes(pipeline),
                "double outcomes": sum(1 for n in outcomes if n > 1),
                "duplicate deliveries": await self.duplicate_deliveries(pipeline),
            },
        )

    async def r2_three_times(self) -> Result:
        o = self.options
        pipeline = f"chaos-r2-{self.run_id}"
        self.say(f"R2: {o.duplicated:,} requests and their decisions, each published three times")
        await self._send(REQUESTS, workload.requests(pipeline, o.duplicated), copies=3)
        await self._until("R2 gates", lambda: self._equals(self.gates(pipeline), o.duplicated))
        gates = await self.tokens(pipeline, o.duplicated)
        await self._send(DECISIONS, self.decisions(gates), copies=3)
        await self._until("R2 outcomes", lambda: self._equals(self.gates(pipeline, "approved"), o.duplicated))
        await self._until("outboxes drained", self.drained)
        events = await self.gate_events(pipeline)
        return Result(
            "R2",
            f"every event three times ({o.duplicated:,} requests, {o.duplicated:,} decisions)",
            {
                "gates not exactly once": abs(o.duplicated - await self.gates(pipeline)),
                "votes not exactly once": abs(o.duplicated - await self.votes(pipeline)),
                "GateOpened not once": sum(
                    1 for t in events.values() if len(t.get(wire.GateOpened.event_type, ())) != 1
                ),
                "GateApproved not once": sum(
                    1 for t in events.values() if len(t.get(wire.GateApproved.event_type, ())) != 1
                ),
                "duplicate deliveries": await self.duplicate_deliveries(pipeline),
            },
        )

    def _malformed(self, index: int) -> workload.Message:
        kind = index % 5
        if kind == 0:
            return (f"nul\x00key-{index}".encode(), b"{not json", [CE])
        if kind == 1:
            return (b"k", b"{not json", [CE, ("x-nul\x00name", b"v\x00")])
        if kind == 2 and index // 5 < self.options.large:
            padded = json.loads(workload.requests("chaos-large", 1)[0][1])
            padded["data"]["padding"] = "x" * 900_000
            return (b"large", json.dumps(padded).encode(), [CE])
        if kind == 3:
            wrong = json.loads(workload.requests("chaos-wrong", 1)[0][1])
            wrong["data"]["key"] = 5
            wrong["id"] = f"wrong-{self.run_id}-{index}"
            return (b"wrong", json.dumps(wrong).encode(), [CE])
        return (b"broken", b'{"specversion": "1.0", "id": ', [CE])

    async def r3_malformed(self) -> Result:
        o = self.options
        pipeline = f"chaos-r3-{self.run_id}"
        self.say(f"R3: {o.malformed:,} malformed records among {o.valid_among:,} valid requests")
        valid = workload.requests(pipeline, o.valid_among)
        bad = [self._malformed(i) for i in range(o.malformed)]
        mixed: list[tuple[bool, workload.Message]] = [(False, m) for m in bad] + [(True, m) for m in valid]
        self.random.shuffle(mixed)
        assert self.producer is not None
        futures = [
            (is_valid, await self.producer.send(REQUESTS, value, key=key, headers=headers))
            for is_valid, (key, value, headers) in mixed
        ]
        bad_positions = set()
        for is_valid, future in futures:
            meta = await future
            if not is_valid:
                bad_positions.add((meta.partition, meta.offset))
        await self._until("R3 valid gates", lambda: self._equals(self.gates(pipeline), o.valid_among))
        await self._until("outboxes drained", self.drained)

        async def dead_lettered() -> set[tuple[int, int]]:
            letters = set()
            for record in await self._read_all(DEAD_LETTER_TOPIC):
                headers = dict(record.headers)
                if headers.get(DLQ_HEADER_ORIGINAL_TOPIC) == REQUESTS.encode() and headers.get(DLQ_HEADER_REASON):
                    letters.add((int(headers[DLQ_HEADER_ORIGINAL_PARTITION]), int(headers[DLQ_HEADER_ORIGINAL_OFFSET])))
            return letters

        letters: set[tuple[int, int]] = set()

        async def all_dead_lettered() -> bool:
            nonlocal letters
            letters = await dead_lettered()
            return bad_positions <= letters

        with contextlib.suppress(ChaosError):  # what is missing is counted below
            await self._until("R3 dead letters", all_dead_lettered, timeout=120)
        return Result(
            "R3",
            f"malformed flood: {o.malformed:,} records (NUL keys and header names, {o.large} x 900 KB values, "
            f"wrong types, broken JSON) among {o.valid_among:,} valid",
            {
                "valid not applied": o.valid_among - await self.gates(pipeline),
                "bad not dead-lettered": len(bad_positions - letters),
                "quarantined": await self._fetchval("SELECT count(*) FROM approval.quarantine"),
                "consumer lag": await self.lag("signoff-approval", REQUESTS),
            },
        )

    async def lag(self, group: str, topic: str) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()  # fetches the cluster's metadata
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
            total = 0
            for tp in partitions:
                committed = await consumer.committed(tp) or 0
                total += max(0, await self._highwater(tp) - committed)
            return total
        finally:
            await consumer.stop()

    async def _highwater(self, tp: TopicPartition) -> int:
        # Tansu's end offsets are wrong after batched produces: read the highwater a fetch reports.
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            return consumer.highwater(tp) or 0
        finally:
            await consumer.stop()

    async def r4_infrastructure(self) -> Result:
        o = self.options
        pipeline = f"chaos-r4-{self.run_id}"
        self.say(f"R4: PostgreSQL frozen {o.freeze_seconds:g}s, then the broker killed and restarted")
        port = self._http_port("approval")
        postgres = self.stack.pid("postgres")
        sending = asyncio.create_task(self._send(REQUESTS, workload.requests(pipeline, o.valid_among)))
        frozen = [postgres, *_children(postgres)]  # each backend is a session of its own (PostgreSQL setsid()s)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        flipped = recovered = False
        try:
            deadline = time.monotonic() + o.freeze_seconds
            while time.monotonic() < deadline:
                flipped = flipped or await self._ready(port) is False
                await asyncio.sleep(0.5)  # sampling /readyz while frozen
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        await sending
        with_postgres = time.monotonic() + 120
        while time.monotonic() < with_postgres and not recovered:
            recovered = await self._ready(port) is True
            await asyncio.sleep(0.5)
        await self._until("R4 gates after the freeze", lambda: self._equals(self.gates(pipeline), o.valid_among))
        await self._until("outboxes drained", self.drained)

        mark = self.stack.mark()
        self.stack.kill("broker")
        self.stack.wait_for(r"the broker starts empty", after=mark, timeout=120)
        for role in ROLES:  # restarted onto the new broker, topics created, consuming
            self.stack.wait_for(rf"^{role}\s*\|.*service_started", after=mark, timeout=180)
        after = f"{pipeline}-after"
        await self._reconnect()
        await self._send(REQUESTS, workload.requests(after, o.valid_among))
        await self._until("R4 gates after the broker restart", lambda: self._equals(self.gates(after), o.valid_among))
        return Result(
            "R4",
            f"PostgreSQL frozen {o.freeze_seconds:g}s and resumed; broker killed and restarted (empty) by the "
            f"supervisor; {o.valid_among:,} requests across each",
            {
                "readiness did not flip": 0 if flipped else 1,
                "readiness did not recover": 0 if recovered else 1,
                "lost across the freeze": o.valid_among - await self.gates(pipeline),
                "lost after the broker restart": o.valid_among - await self.gates(after),
            },
        )

    async def _reconnect(self) -> None:
        """A new producer: the old one's connections went with the broker."""
        if self.producer is not None:
            await self.producer.stop()
        self.producer = make_producer(self.settings, "signoff-chaos")
        await self.producer.start()

    def _http_port(self, role: str) -> int:
        lines = self.stack.snapshot()
        ports = [
            int(m.group(1) or m.group(2))
            for line in lines
            if line.startswith(f"{role} ") and (m := re.search(r'"http_port": ?(\d+)|http_port=(\d+)', line))
        ]
        if not ports:
            raise ChaosError(f"no http port of {role} in the supervisor's output")
        return ports[-1]

    async def _ready(self, port: int) -> bool | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.get(f"http://127.0.0.1:{port}/readyz") as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def r5_burst(self) -> Result:
        o = self.options
        pipeline = f"chaos-r5-{self.run_id}"
        decided_pipeline = f"chaos-r5d-{self.run_id}"
        self.say(f"R5: {o.burst:,} requests in a burst while {o.burst_decisions:,} decisions come at {o.rate:g}/s")
        await self._send(REQUESTS, workload.requests(decided_pipeline, o.burst_decisions))
        await self._until("R5 gates to decide", lambda: self._equals(self.gates(decided_pipeline), o.burst_decisions))
        gates = await self.tokens(decided_pipeline, o.burst_decisions)
        burst = asyncio.create_task(self._send(REQUESTS, workload.requests(pipeline, o.burst)))
        await self._paced(DECISIONS, self.decisions(gates), rate=o.rate)
        await burst
        await self._until("R5 burst gates", lambda: self._equals(self.gates(pipeline), o.burst))
        await self._until(
            "R5 outcomes", lambda: self._equals(self.gates(decided_pipeline, "approved"), o.burst_decisions)
        )
        return Result(
            "R5",
            f"burst of {o.burst:,} requests under {o.rate:g} decisions/s ({o.burst_decisions:,} decisions)",
            {
                "requests stuck": o.burst - await self.gates(pipeline),
                "decisions stuck": o.burst_decisions - await self.gates(decided_pipeline, "approved"),
            },
        )

    async def _equals(self, awaitable, expected: int) -> bool:
        return await awaitable == expected

    async def run(self) -> list[Result]:
        return [
            await self.r1_kills(),
            await self.r2_three_times(),
            await self.r3_malformed(),
            await self.r4_infrastructure(),
            await self.r5_burst(),
        ]


def _children(parent: int) -> list[int]:
    """Processes whose parent is `parent` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def markdown(results: Sequence[Result]) -> str:
    lines = ["| | scenario | checks (each must be 0) | result |", "|---|---|---|---|"]
    for result in results:
        checks = ", ".join(f"{name}: {count}" for name, count in result.problems.items())
        lines.append(f"| {result.id} | {result.what} | {checks} | {'ok' if result.ok else '**LOSS**'} |")
    return "\n".join(lines)
