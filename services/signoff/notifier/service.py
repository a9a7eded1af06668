"""The notifier role: consumes gate events, writes deliveries, sends them, reminds and escalates."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aiohttp
import click
import structlog

from signoff.catalog import Catalog
from signoff.catalog.yamldoc import read_document
from signoff.contracts.topics import TOPICS
from signoff.notifier.channels import Secrets, build_transports, check_channels
from signoff.notifier.dispatcher import Dispatcher, Lane, RetryPolicy, prefetch_depth
from signoff.notifier.domain import Routing, RoutingError
from signoff.notifier.handlers import NotifierHandler, Notifying, send_due_reminders
from signoff.notifier.repository import SCHEMA, NotifierRepository
from signoff.notifier.settings import NotifierSettings
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.logging import configure_logging
from signoff.runtime.service import Service, ServiceContext, ServiceSpec
from signoff.runtime.startup import role_settings, starting
from signoff.runtime.tracing import traced

log = structlog.get_logger(__name__)

GATES_TOPIC = "signoff.approval.gates.v1"
assert GATES_TOPIC in {topic.name for topic in TOPICS}

DEV_ROUTING = {
    "channels": [{"name": "dev-log", "type": "log"}],
    "routes": [{"groups": ["*"], "channels": ["dev-log"]}],
}
"""The routing without a routing file: every notification is a log line of the notifier (see docs)."""

DEV_ROUTING_SOURCE = "<default dev routing>"


def dev_routing() -> Routing:
    """The development routing (`DEV_ROUTING`)."""
    return Routing.from_mapping(DEV_ROUTING, DEV_ROUTING_SOURCE)


def load_routing(settings: NotifierSettings) -> Routing:
    """The routing file, or the development routing (one `log` channel for every group) when none is set."""
    if settings.routing_file is None:
        log.warning(
            "no_routing_file",
            using="dev-log: notifications are logged, not sent",
            kept="deliveries of other channels: left to the replicas whose routing has them",
        )
        return dev_routing()
    return read_routing(settings.routing_file)


def read_routing(path: str | Path) -> Routing:
    """Read a routing YAML file; raises `RoutingError` (unreadable file, bad YAML, or invalid content)."""
    return Routing.from_mapping(read_document(path, RoutingError), str(path))


def notifier_spec(
    settings: NotifierSettings,
    *,
    clock: Clock | None = None,
    routing: Routing | None = None,
    catalog: Catalog | None = None,
    topic: str = GATES_TOPIC,
    group_id: str | None = None,
) -> ServiceSpec:
    """The notifier role's spec: routing, catalog and channels (secrets, URLs, signing keys) are checked here, so a
    bad file, a missing secret or a malformed URL or key stops the role at start with the reason."""
    clock = clock or SystemClock()
    routing = routing or load_routing(settings)
    catalog = catalog or (Catalog.load(settings.catalog_file) if settings.catalog_file else Catalog.empty())
    secrets_dir = settings.channel_secrets_dir or _secrets_dir()
    secrets = Secrets(secrets_dir)
    for name, channel in routing.channels.items():
        timeout = channel.send_timeout(settings.channel_timeout_seconds)
        if timeout >= settings.delivery_lease_seconds:
            # A send still under way when its claim runs out would be claimed and sent again by another replica.
            raise ValueError(
                f"channel {name!r}: a send may take {timeout:g}s, not less than the delivery lease of "
                f"{settings.delivery_lease_seconds:g}s (SIGNOFF_DELIVERY_LEASE_SECONDS): lower the channel's "
                "timeout_seconds (or SIGNOFF_CHANNEL_TIMEOUT_SECONDS) or raise the lease"
            )
    # Secrets, URLs, `whsec_` keys: read here, before the role joins its group, so a bad one is the reason the
    # role does not start rather than a crash of its dispatcher (a restart loop) once it runs.
    check_channels(routing, secrets)
    repository = NotifierRepository(SCHEMA)
    notifying = Notifying(routing, catalog, settings.approval_page_url, settings.delivery_max_attempts)
    policy = RetryPolicy(
        max_attempts=settings.delivery_max_attempts,
        base=settings.backoff_base,
        cap=settings.backoff_cap,
        lease=settings.lease,
    )

    def handler(context: ServiceContext) -> NotifierHandler:
        return NotifierHandler(notifying, clock=clock, repository=repository)

    async def dispatcher(context: ServiceContext) -> None:
        # limit=0: no pool-wide connection cap, so one hanging sink cannot use up connections the others need;
        # each lane's concurrency is the limit.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            transports = build_transports(
                routing, secrets, session, default_timeout=settings.channel_timeout_seconds, pool=context.pool
            )
            lanes = {}
            for name, channel in routing.channels.items():
                timeout = channel.send_timeout(settings.channel_timeout_seconds)
                lanes[name] = Lane(
                    channel=name,
                    transport=transports[name],
                    concurrency=channel.send_concurrency(settings.channel_concurrency),
                    timeout=timeout,
                    prefetch=prefetch_depth(policy.lease, timeout),
                )
            await Dispatcher(
                context.pool,
                lanes,
                clock,
                policy=policy,
                repository=repository,
                poll_interval=settings.dispatch_interval_seconds,
                # A replica without a routing file (a pod that lost its mount) knows no channel: ending every
                # other channel's deliveries as removed would lose what the other replicas still send.
                drop_unrouted=routing.source != DEV_ROUTING_SOURCE,
            ).run(context.stopping)

    async def reminders(context: ServiceContext) -> None:
        while not context.stopping.is_set():
            try:
                while await send_due_reminders(context.pool, notifying, clock, repository=repository):
                    if context.stopping.is_set():
                        break
            except Exception as exc:  # database unreachable: the schedule stays, the next tick retries
                log.warning("reminder_pass_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(context.stopping.wait(), settings.dispatch_interval_seconds)

    dispatcher.__name__ = "notifier-dispatcher"
    reminders.__name__ = "notifier-reminders"
    return ServiceSpec(
        name="notifier",
        schema=SCHEMA,
        migrations_package="signoff.notifier.sql",
        consumes=(topic,),
        produces=(),
        handler=handler,
        background=(dispatcher, reminders),
        group_id=group_id,
    )


def _secrets_dir() -> Path | None:
    value = os.environ.get("SIGNOFF_SECRETS_DIR")
    return Path(value) if value and Path(value).is_dir() else None


@click.command()
def notifier() -> None:
    """Run the notifier service (approval notifications on Slack, Teams, e-mail, webhooks) until SIGTERM."""
    settings = role_settings("notifier", NotifierSettings)
    configure_logging(settings.log_level, settings.log_format, role="notifier")
    with starting("notifier", settings):
        spec = notifier_spec(settings)  # a bad routing file or a missing channel secret: one line, before anything
        with traced("notifier"):
            asyncio.run(Service(spec, settings).run())
