"""One lifespan for every role: build the clients, migrate, consume, relay the outbox, serve health and metrics,
and shut down gracefully on SIGTERM (stop fetching, finish and commit the batch, flush the outbox, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from signoff.contracts.topics import DEAD_LETTER_TOPIC
from signoff.runtime.consumer import BatchHandler, ConsumerLoop, prune_inbox
from signoff.runtime.db import pool_from_settings
from signoff.runtime.http import HealthServer
from signoff.runtime.kafka import ensure_topics, make_consumer, make_producer
from signoff.runtime.migrations import load_migrations, migrate
from signoff.runtime.outbox import MAIN_LANE, OutboxRelay
from signoff.runtime.settings import Settings
from signoff.runtime.startup import role_serving

log = structlog.get_logger(__name__)


@dataclass
class ServiceContext:
    """What a role's handlers and background tasks get: the settings and the live clients."""

    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    stopping: asyncio.Event


@dataclass(frozen=True)
class Lane:
    """Topics a role consumes on a loop of its own, so their events never queue behind a burst on the role's
    other topics: its own consumer (group `<role's group>-<name>`), its own batches and database transactions
    (a connection of the pool each), the same handler and the same inbox (consumer name: the role's group)."""

    name: str
    topics: Sequence[str]


@dataclass
class ServiceSpec:
    """A role: its schema, the topics it consumes and produces, its handler and its background tasks. `lanes`
    are topics consumed on loops of their own (see Lane)."""

    name: str
    schema: str
    migrations_package: str | None
    consumes: Sequence[str]
    produces: Sequence[str]
    handler: Callable[[ServiceContext], BatchHandler]
    background: Sequence[Callable[[ServiceContext], Awaitable[None]]] = field(default_factory=tuple)
    startup: Sequence[Callable[[ServiceContext], Awaitable[None]]] = field(default_factory=tuple)
    """Run once before the role consumes or reports ready (e.g. loading a file into its schema)."""
    group_id: str | None = None
    lanes: Sequence[Lane] = ()

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"signoff-{self.name}"

    @property
    def all_topics(self) -> set[str]:
        return {*self.consumes, *(topic for lane in self.lanes for topic in lane.topics)}


async def until_stopped(stopping: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Return when `stopping` is set or one of `tasks` ends; a task that failed raises its error here (the role
    then exits non-zero)."""
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    for task in done:
        if task is not stop_wait and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class Role(Protocol):
    """What `run_until_signalled` runs: a role process's lifespan."""

    stopping: asyncio.Event

    async def start(self) -> None: ...
    async def wait(self) -> None: ...
    async def stop(self) -> None: ...


# The cyclic collector's thresholds once a role serves (CPython's defaults: 700, 10, 10). A batch of a thousand
# events allocates millions of short-lived objects; at the defaults the collector runs every 700 of them and keeps
# re-walking everything that survived, which cost 15-20 % of the approval role's CPU in P1's burst (about 1,030 ->
# 815-900 us per request, docs/benchmarks.md "The collector"). Reference counting still frees what is not in a
# cycle at once.
SERVING_GC_THRESHOLDS = (10_000, 50, 100)


def settle_heap() -> None:
    """Tune the cyclic garbage collector for serving (once the role has started).

    What exists now (modules, settings, schemas, pools) lives as long as the process: `gc.freeze()` moves it out of
    the collector's sight, so no collection walks it again; the larger thresholds make collections of the young
    generations rarer (`SERVING_GC_THRESHOLDS`).
    """
    gc.collect()  # start-up's garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


async def run_until_signalled(role: Role) -> None:
    """Start `role`, serve until SIGTERM / SIGINT (or until one of its tasks fails), then stop it gracefully."""
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, role.stopping.set)
    try:
        await role.start()
        role_serving()
        settle_heap()
        await role.wait()
    finally:
        await role.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)


BACKGROUND_GRACE_SECONDS = 15.0
POOL_CLOSE_SECONDS = 10.0
INBOX_PRUNE_INTERVAL_SECONDS = 3600.0


class Service:
    """A running role. `start()` returns once it consumes; `stop()` drains; `run()` does both around signals."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.stopping = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.loop: ConsumerLoop | None = None  # the main loop (spec.consumes)
        self.lanes: list[ConsumerLoop] = []  # one per spec.lanes
        self.relays: list[OutboxRelay] = []  # the main lane's first, then one per spec.lanes
        self._lane_producers: list[AIOKafkaProducer] = []
        self.http: HealthServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False  # `stop()` also cleans up after a start that failed half-way

    async def start(self) -> None:
        spec, settings = self.spec, self.settings
        self.pool = await pool_from_settings(settings)
        async with self.pool.acquire() as conn:
            migrations = load_migrations(spec.migrations_package, spec.schema) if spec.migrations_package else []
            await migrate(conn, spec.schema, migrations)
        await ensure_topics(settings, {*spec.all_topics, *spec.produces, DEAD_LETTER_TOPIC})
        self.producer = make_producer(settings, client_id=f"signoff-{spec.name}")
        await self.producer.start()
        context = ServiceContext(settings, self.pool, self.producer, self.stopping)
        for step in spec.startup:
            await step(context)
        self.relays = [OutboxRelay(self.pool, self.producer, spec.schema)]
        for lane in spec.lanes:
            # A producer of its own: a lane's records are not batched behind the main relay's on the connection.
            producer = make_producer(settings, client_id=f"signoff-{spec.name}-{lane.name}")
            await producer.start()
            self._lane_producers.append(producer)
            self.relays.append(OutboxRelay(self.pool, producer, spec.schema, lane=lane.name))
        handler = spec.handler(context)

        def loop(name: str, topics: Sequence[str], outbox_lane: str = MAIN_LANE) -> ConsumerLoop:
            return ConsumerLoop(
                name=name,
                inbox_name=spec.consumer_group,
                topics=topics,
                consumer=make_consumer(settings, topics, name, f"signoff-{spec.name}"),
                pool=self.pool,
                schema=spec.schema,
                handler=handler,
                max_batch=settings.consumer_max_batch,
                outbox_lane=outbox_lane,
            )

        self.loop = loop(spec.consumer_group, spec.consumes)
        self.lanes = [loop(f"{spec.consumer_group}-{lane.name}", lane.topics, lane.name) for lane in spec.lanes]
        # Each start waits for its group's assignment (a join takes a share of the session timeout on some brokers):
        # the loops join their groups together, not one after another.
        await asyncio.gather(*(each.start() for each in self.loops))
        self.http = HealthServer(
            settings.http_host,
            settings.http_port,
            pool=self.pool,
            loops=[each.state for each in self.loops],
            role=spec.name,
        )
        await self.http.start()
        self._tasks = [
            asyncio.create_task(self.loop.run(), name="consumer"),
            *(asyncio.create_task(lane.run(), name=f"consumer-{lane.name}") for lane in self.lanes),
            *(asyncio.create_task(relay.run(), name=f"outbox-relay-{relay.lane}") for relay in self.relays),
            asyncio.create_task(self._prune_inbox(), name="inbox-pruner"),
            *(asyncio.create_task(task(context), name=task.__name__) for task in spec.background),
        ]
        log.info(
            "service_started",
            role=spec.name,
            group=spec.consumer_group,
            topics=list(spec.consumes),
            lanes={lane.name: list(lane.topics) for lane in self.lanes},
            http_port=self.http.port,
        )
        self.started = True

    async def _prune_inbox(self) -> None:
        """Forget applied event ids older than SIGNOFF_INBOX_RETENTION_DAYS, at start and hourly (the inbox would
        otherwise grow by a row per event forever). A failure waits for the next round; it never stops the role."""
        assert self.pool is not None
        retention = timedelta(days=self.settings.inbox_retention_days)
        while not self.stopping.is_set():
            try:
                async with self.pool.acquire() as conn:
                    deleted = await prune_inbox(conn, self.spec.schema, retention)
                if deleted:
                    log.info(
                        "inbox_pruned",
                        schema=self.spec.schema,
                        rows=deleted,
                        retention_days=self.settings.inbox_retention_days,
                    )
            except Exception as exc:  # the database away: the rows wait for the next round
                log.warning("inbox_prune_failed", schema=self.spec.schema, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), INBOX_PRUNE_INTERVAL_SECONDS)

    @property
    def loops(self) -> list[ConsumerLoop]:
        return [*([self.loop] if self.loop is not None else []), *self.lanes]

    async def wait(self) -> None:
        """Until stop is requested or a task dies (a dead task is an error: the role exits non-zero)."""
        await until_stopped(self.stopping, self._tasks)

    async def stop(self) -> None:
        """Graceful: stop fetching, let the batch in flight commit, flush the outbox, close the clients."""
        self.stopping.set()
        for each in self.loops:
            each.stop()
        consumer_tasks = [t for t in self._tasks if t.get_name().startswith("consumer")]
        if consumer_tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*consumer_tasks), timeout=30)
        # Each leaves its group at once, so partitions move without a timeout; the loops leave together.
        await asyncio.gather(*(each.consumer.stop() for each in self.loops))
        for relay in self.relays:
            relay.stop()
        # Together: each drains its own lane, and a lane's row may wait for another lane's older one.
        await asyncio.gather(*(relay.drain() for relay in self.relays))
        # Background tasks watch `stopping` and finish on their own (releasing leases, recording what they sent,
        # returning connections); cancelling them mid-cleanup could leave a connection out and pool.close() waiting.
        running = [task for task in self._tasks if not task.done()]
        if running:
            await asyncio.wait(running, timeout=BACKGROUND_GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for producer in self._lane_producers:
            await producer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.http is not None:
            await self.http.stop()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), POOL_CLOSE_SECONDS)
            except TimeoutError:
                # A connection never came back (a bug to find, not a reason to hang the shutdown): cut them all.
                log.warning("pool_close_timed_out", role=self.spec.name, after_seconds=POOL_CLOSE_SECONDS)
                self.pool.terminate()
        if self.started:  # a role that never started says why in its error line, not that it stopped
            log.info("service_stopped", role=self.spec.name)

    async def run(self) -> None:
        """Start, serve until SIGTERM / SIGINT, stop."""
        await run_until_signalled(self)
