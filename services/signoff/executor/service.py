"""The executor role: consumes execution requests and gate events, runs pipelines, publishes approval requests and
execution events."""

from __future__ import annotations

import asyncio

import click

from signoff.catalog import Catalog
from signoff.contracts.topics import APPROVAL_GATES, APPROVAL_REQUESTS, EXECUTION_EVENTS, EXECUTION_REQUESTS
from signoff.executor.domain.definitions import Definitions
from signoff.executor.handlers import ExecutorHandler
from signoff.executor.repository import SCHEMA, ExecutorRepository
from signoff.executor.runner import Runner
from signoff.executor.script_runner import ScriptRunnerClient
from signoff.executor.scripts import run_script
from signoff.executor.settings import ExecutorSettings
from signoff.runtime.clock import Clock, SystemClock
from signoff.runtime.logging import configure_logging
from signoff.runtime.service import Service, ServiceContext, ServiceSpec
from signoff.runtime.startup import role_settings, starting
from signoff.runtime.tracing import traced

REQUESTS_TOPIC = EXECUTION_REQUESTS.name
GATES_TOPIC = APPROVAL_GATES.name


def load_catalog(settings: ExecutorSettings) -> Catalog | None:
    """The catalog of SIGNOFF_CATALOG_FILE (a bad file stops the role at start, with the problem), or None."""
    return Catalog.load(settings.catalog_file) if settings.catalog_file is not None else None


def executor_spec(
    settings: ExecutorSettings, clock: Clock | None = None, *, definitions: Definitions | None = None
) -> ServiceSpec:
    """The executor role's spec: the consumer handler, and the runner as a background task. `definitions`: the
    parsed pipelines and plans the role keeps (new and empty when not given)."""
    clock = clock or SystemClock()
    catalog = load_catalog(settings)
    # The consumer and the runner load the same executions through one repository: one parse serves both (the
    # start's, which validated the document).
    repository = ExecutorRepository(
        SCHEMA, catalog=catalog, definitions=definitions if definitions is not None else Definitions()
    )

    run_scripts = (
        ScriptRunnerClient(settings.script_runner_socket) if settings.script_runner_socket is not None else run_script
    )

    def handler(context: ServiceContext) -> ExecutorHandler:
        return ExecutorHandler(catalog=catalog, clock=clock, repository=repository)

    async def run_executions(context: ServiceContext) -> None:
        if isinstance(run_scripts, ScriptRunnerClient):
            await run_scripts.probe()  # a runner that is not there stops the role, with its socket named
        runner = Runner(
            context.pool,
            clock,
            catalog=catalog,
            repository=repository,
            poll_interval=settings.runner_poll_seconds,
            lease_seconds=settings.script_lease_seconds,
            max_scripts=settings.max_scripts,
            run_scripts=run_scripts,
        )
        await runner.run(context.stopping)

    run_executions.__name__ = "executor-runner"
    return ServiceSpec(
        name="executor",
        schema=SCHEMA,
        migrations_package="signoff.executor.sql",
        consumes=(REQUESTS_TOPIC, GATES_TOPIC),
        produces=(APPROVAL_REQUESTS.name, EXECUTION_EVENTS.name),
        handler=handler,
        background=(run_executions,),
    )


@click.command()
def executor() -> None:
    """Run the executor service (pipelines, scripts, approval steps) until SIGTERM."""
    settings = role_settings("executor", ExecutorSettings)
    configure_logging(settings.log_level, settings.log_format, role="executor")
    with starting("executor", settings), traced("executor"):
        asyncio.run(Service(executor_spec(settings), settings).run())
