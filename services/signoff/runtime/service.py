"""One lifespan for every role: build the clients, migrate, consume, relay the outbox, serve health and metrics,
and shut down gracefully on SIGTERM (stop fetching, finish and commit the batch, flush the outbox, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from signoff.contracts.topics import DEAD_LETTER_TOPIC
from signoff.runtime.consumer import BatchHandler, ConsumerLoop
from signoff.runtime.db import pool_from_settings
from signoff.runtime.http import HealthServer
from signoff.runtime.kafka import ensure_topics, make_consumer, make_producer
from signoff.runtime.migrations import load_migrations, migrate
from signoff.runtime.outbox import OutboxRelay
from signoff.runtime.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class ServiceContext:
    """What a role's handlers and background tasks get: the settings and the live clients."""

    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    stopping: asyncio.Event


@dataclass
class ServiceSpec:
    """A role: its schema, the topics it consumes and produces, its handler and its background tasks."""

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

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"signoff-{self.name}"


async def until_stopped(stopping: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Return when `stopping` is set or one of `tasks` ends; a task that failed raises its error here (the role
    then exits non-zero)."""
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    for task in done:
        if task is not stop_wait and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


BACKGROUND_GRACE_SECONDS = 15.0
POOL_CLOSE_SECONDS = 10.0


class Service:
    """A running role. `start()` returns once it consumes; `stop()` drains; `run()` does both around signals."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.stopping = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.loop: ConsumerLoop | None = None
        self.relay: OutboxRelay | None = None
        self.http: HealthServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        spec, settings = self.spec, self.settings
        self.pool = await pool_from_settings(settings)
        async with self.pool.acquire() as conn:
            migrations = load_migrations(spec.migrations_package, spec.schema) if spec.migrations_package else []
            await migrate(conn, spec.schema, migrations)
        await ensure_topics(settings, {*spec.consumes, *spec.produces, DEAD_LETTER_TOPIC})
        self.producer = make_producer(settings, client_id=f"signoff-{spec.name}")
        await self.producer.start()
        context = ServiceContext(settings, self.pool, self.producer, self.stopping)
        for step in spec.startup:
            await step(context)
        self.relay = OutboxRelay(self.pool, self.producer, spec.schema)
        self.loop = ConsumerLoop(
            name=spec.consumer_group,
            topics=spec.consumes,
            consumer=make_consumer(settings, spec.consumes, spec.consumer_group, f"signoff-{spec.name}"),
            pool=self.pool,
            schema=spec.schema,
            handler=spec.handler(context),
            max_batch=settings.consumer_max_batch,
        )
        await self.loop.start()
        self.http = HealthServer(settings.http_host, settings.http_port, pool=self.pool, loops=[self.loop.state])
        await self.http.start()
        self._tasks = [
            asyncio.create_task(self.loop.run(), name="consumer"),
            asyncio.create_task(self.relay.run(), name="outbox-relay"),
            *(asyncio.create_task(task(context), name=task.__name__) for task in spec.background),
        ]
        log.info(
            "service_started",
            role=spec.name,
            group=spec.consumer_group,
            topics=list(spec.consumes),
            http_port=self.http.port,
        )

    async def wait(self) -> None:
        """Until stop is requested or a task dies (a dead task is an error: the role exits non-zero)."""
        await until_stopped(self.stopping, self._tasks)

    async def stop(self) -> None:
        """Graceful: stop fetching, let the batch in flight commit, flush the outbox, close the clients."""
        self.stopping.set()
        if self.loop is not None:
            self.loop.stop()
        consumer_task = next((t for t in self._tasks if t.get_name() == "consumer"), None)
        if consumer_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer_task, timeout=30)
        if self.loop is not None:
            await self.loop.consumer.stop()  # leaves the group at once, so partitions move without a timeout
        if self.relay is not None:
            self.relay.stop()
            await self.relay.drain()
        # Background tasks watch `stopping` and finish on their own (releasing leases, recording what they sent,
        # returning connections); cancelling them mid-cleanup could leave a connection out and pool.close() waiting.
        running = [task for task in self._tasks if not task.done()]
        if running:
            await asyncio.wait(running, timeout=BACKGROUND_GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
        log.info("service_stopped", role=self.spec.name)

    async def run(self) -> None:
        """Start, serve until SIGTERM / SIGINT, stop."""
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, self.stopping.set)
        try:
            await self.start()
            await self.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                running.remove_signal_handler(sig)
