"""The api role: `signoff api`. Serves /api/v1 on SIGNOFF_API_PORT and /healthz, /readyz, /metrics on
SIGNOFF_HTTP_PORT like every role; publishes decisions and execution requests; listens to gate events.

Lifespan: pool (and its own `api` schema migrated, like every role's), producer, gate-event listener (ready once
positioned at the end of the gates topic), then the HTTP server. SIGTERM: stop accepting, let requests in flight
finish (uvicorn's graceful shutdown), stop the listener and producer, close the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from datetime import UTC, datetime

import click
import structlog
import uvicorn
from slack_sdk.web.async_client import AsyncWebClient

from signoff.api.app import ApiContext, create_app
from signoff.api.decisions import DecisionDesk
from signoff.api.executions import ExecutionDesk
from signoff.api.identity import Authenticator
from signoff.api.outcomes import GateEventListener, OutcomeWaiters
from signoff.api.pages import PageSettings
from signoff.api.repository import SCHEMA
from signoff.api.settings import ApiSettings
from signoff.api.slack import SOURCE as SLACK_SOURCE
from signoff.api.slack import SlackDesk
from signoff.catalog import Catalog
from signoff.contracts.topics import APPROVAL_DECISIONS, APPROVAL_GATES, EXECUTION_REQUESTS
from signoff.runtime.db import pool_from_settings
from signoff.runtime.http import HealthServer
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.logging import configure_logging
from signoff.runtime.migrations import load_migrations, migrate
from signoff.runtime.service import run_until_signalled, until_stopped
from signoff.runtime.startup import StartupError, role_settings, starting
from signoff.runtime.tracing import traced

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn inside our lifespan: the role owns the signals (uvicorn's own handlers would replace ours)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiRole:
    """The running api role; `start()` returns once it serves, `stop()` drains."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        clock: Callable[[], datetime] | None = None,
        gates_topic: str = APPROVAL_GATES.name,
        decisions_topic: str = APPROVAL_DECISIONS.name,
        requests_topic: str = EXECUTION_REQUESTS.name,
    ) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.gates_topic, self.decisions_topic, self.requests_topic = gates_topic, decisions_topic, requests_topic
        self.stopping = asyncio.Event()
        self.port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False  # `stop()` also cleans up after a start that failed half-way

    @property
    def url(self) -> str:
        """Where this replica serves (the public URL when configured)."""
        return self.settings.api_public_url or f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = self.settings
        if problem := settings.slack_problem():  # checked first: a half-configured Slack opens nothing
            raise ValueError(problem)
        slack_keys = {}
        if settings.slack_decision_key is not None:
            slack_keys[SLACK_SOURCE] = settings.slack_decision_key.get_secret_value().encode()
        catalog = Catalog.load(settings.catalog_file) if settings.catalog_file else Catalog.empty()
        self.pool = await pool_from_settings(settings)
        async with self.pool.acquire() as conn:
            await migrate(conn, SCHEMA, load_migrations("signoff.api.sql", SCHEMA))
        await ensure_topics(settings, {self.gates_topic, self.decisions_topic, self.requests_topic})
        self.producer = make_producer(settings, client_id="signoff-api")
        await self.producer.start()
        self.waiters = OutcomeWaiters()
        self.listener = GateEventListener(settings, self.gates_topic, self.waiters, client_id="signoff-api")
        await self.listener.start()
        key = settings.api_decision_key.get_secret_value().encode() if settings.api_decision_key else None
        if key is None:
            log.warning("api_decisions_disabled", why="SIGNOFF_API_DECISION_KEY is not set")
        self._server = _Server(
            uvicorn.Config(
                None,  # set below, once the base URL (with the bound port) is known
                host=settings.api_host,
                port=settings.api_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=20,
            )
        )
        self.context = ApiContext(
            pool=self.pool,
            authenticator=Authenticator.from_settings(settings, self.pool),
            decisions=DecisionDesk(
                pool=self.pool,
                producer=self.producer,
                waiters=self.waiters,
                key=key,
                wait_seconds=settings.api_decision_wait_seconds,
                base_url="",
                clock=self.clock,
                decisions_topic=self.decisions_topic,
                source_keys=slack_keys,
            ),
            executions=ExecutionDesk(
                pool=self.pool,
                producer=self.producer,
                catalog=catalog if settings.catalog_file else None,
                wait_seconds=settings.api_decision_wait_seconds,
                clock=self.clock,
                requests_topic=self.requests_topic,
            ),
            catalog=catalog,
            base_url="",
            max_body_bytes=settings.api_max_body_bytes,
            clock=self.clock,
            pages=PageSettings.from_settings(settings),
        )
        if settings.slack_signing_secret is not None:
            assert settings.slack_bot_token is not None
            self.context.slack = SlackDesk(
                pool=self.pool,
                decisions=self.context.decisions,
                signing_secret=settings.slack_signing_secret.get_secret_value(),
                client=AsyncWebClient(
                    token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=5
                ),
                clock=self.clock,
            )
        self._server.config.app = create_app(self.context)
        self._server.config.load()
        self._server.lifespan = self._server.config.lifespan_class(self._server.config)
        await self._server.startup()
        if self._server.should_exit:
            raise RuntimeError(f"the api cannot listen on {settings.api_host}:{settings.api_port}")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.context.base_url = self.context.decisions.base_url = self.url
        self.http = HealthServer(
            settings.http_host, settings.http_port, pool=self.pool, loops=[], extra_ready=self._not_ready, role="api"
        )
        await self.http.start()
        self._tasks = [
            asyncio.create_task(self._server.main_loop(), name="http"),
            asyncio.create_task(self.listener.run(self.stopping), name="gate-listener"),
        ]
        log.info("service_started", role="api", url=self.url, http_port=self.http.port)
        self.started = True

    async def _not_ready(self) -> str | None:
        if not self.listener.ready.is_set():
            return "gate event listener not positioned"
        return None

    async def wait(self) -> None:
        """Until stop is requested or a task dies (a dead task is an error: the role exits non-zero)."""
        await until_stopped(self.stopping, self._tasks)

    async def stop(self) -> None:
        self.stopping.set()
        server = getattr(self, "_server", None)
        if server is not None and getattr(server, "servers", None):
            server.should_exit = True
            await server.shutdown()
        context = getattr(self, "context", None)
        if context is not None and context.slack is not None:
            # Slack interactions acknowledged but not finished: they need the producer and the listener.
            await context.slack.drain(timeout=self.settings.api_decision_wait_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closing in ("listener", "producer"):
            client = getattr(self, closing, None)
            if client is not None:
                await client.stop()
        if getattr(self, "http", None) is not None:
            await self.http.stop()
        if context is not None:  # the identity provider's HTTP clients (OIDC keys)
            await context.authenticator.aclose()
            if context.pages is not None:
                await context.pages.aclose()
        if getattr(self, "pool", None) is not None:
            await self.pool.close()
        if self.started:  # a role that never started says why in its error line, not that it stopped
            log.info("service_stopped", role="api")

    async def run(self) -> None:
        """Start, serve until SIGTERM / SIGINT, stop."""
        await run_until_signalled(self)


@click.command()
def api() -> None:
    """Run the api role (the REST API /api/v1 for approvers and pipelines) until SIGTERM."""
    settings = role_settings("api", ApiSettings)
    configure_logging(settings.log_level, settings.log_format, role="api")
    if problem := settings.slack_problem():
        raise StartupError(problem)
    with starting("api", settings), traced("api"):
        asyncio.run(ApiRole(settings).run())
