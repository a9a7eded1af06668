"""The approval role: consumes approval requests and decisions, publishes gate events, expires gates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import structlog

from signoff.approval.cdevents import ApprovalLinks
from signoff.approval.directory import read_directory
from signoff.approval.expiry import run_expiry
from signoff.approval.handlers import ApprovalHandler
from signoff.approval.metrics import GateMetrics, run_gate_gauges
from signoff.approval.repository import SCHEMA, ApprovalRepository
from signoff.approval.settings import ApprovalSettings
from signoff.contracts.topics import TOPICS
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.logging import configure_logging
from signoff.runtime.service import Lane, Service, ServiceContext, ServiceSpec
from signoff.runtime.startup import role_settings, starting
from signoff.runtime.tracing import traced

REQUESTS_TOPIC = "signoff.approval.requests.v1"
DECISIONS_TOPIC = "signoff.approval.decisions.v1"
GATES_TOPIC = "signoff.approval.gates.v1"
CDEVENTS_TOPIC = "signoff.cdevents.v1"
log = structlog.get_logger(__name__)
assert {REQUESTS_TOPIC, DECISIONS_TOPIC, GATES_TOPIC, CDEVENTS_TOPIC} <= {topic.name for topic in TOPICS}


async def load_directory(context: ServiceContext, path: Path, repository: ApprovalRepository) -> None:
    """Load the directory file, once: only when it changed since it was last loaded (see
    `ApprovalRepository.load_directory_file`)."""
    members = read_directory(path)
    async with context.pool.acquire() as conn:
        loaded = await repository.load_directory_file(conn, members)
    log.info("directory_file", path=str(path), loaded=loaded, members=len(members))


def approval_spec(settings: ApprovalSettings, clock: Clock | None = None) -> ServiceSpec:
    """The approval role's spec."""
    clock = clock or SystemClock()
    settings.decision_key_map()  # a malformed SIGNOFF_DECISION_KEYS stops the role at start, not at the first decision
    repository = ApprovalRepository(SCHEMA)
    # One per process: the decisions lane, the requests loop and the expiry loop label the same pipelines.
    metrics = GateMetrics(settings.metrics_pipeline_ids, settings.metrics_pipeline_limit)

    def handler(context: ServiceContext) -> ApprovalHandler:
        return ApprovalHandler(settings, clock=clock, repository=repository, metrics=metrics)

    async def directory(context: ServiceContext) -> None:
        if settings.directory_file is not None:
            await load_directory(context, settings.directory_file, repository)

    async def expiry(context: ServiceContext) -> None:
        await run_expiry(
            context.pool,
            clock,
            context.stopping,
            links=ApprovalLinks(settings.approval_page_url),
            interval=settings.expiry_interval_seconds,
            repository=repository,
            metrics=metrics,
        )

    async def gauges(context: ServiceContext) -> None:
        await run_gate_gauges(
            context.pool,
            clock,
            context.stopping,
            interval=settings.metrics_gauge_interval_seconds,
            within=settings.metrics_expiring_within_span,
            repository=repository,
        )

    expiry.__name__ = "approval-expiry"
    gauges.__name__ = "approval-gate-gauges"
    return ServiceSpec(
        name="approval",
        schema=SCHEMA,
        migrations_package="signoff.approval.sql",
        consumes=(REQUESTS_TOPIC,),
        # Decisions on a loop of their own: a person's approval never waits behind a burst of requests.
        lanes=(Lane("decisions", (DECISIONS_TOPIC,)),),
        produces=(GATES_TOPIC, CDEVENTS_TOPIC),
        handler=handler,
        background=(expiry, gauges),
        # Loaded before the role reports ready, so nothing (a request, `signoff dev token`) meets an empty directory.
        startup=(directory,),
    )


@click.command()
def approval() -> None:
    """Run the approval service (gates, votes, timeouts) until SIGTERM."""
    settings = role_settings("approval", ApprovalSettings)
    configure_logging(settings.log_level, settings.log_format, role="approval")
    with starting("approval", settings), traced("approval"):
        asyncio.run(Service(approval_spec(settings), settings).run())
