"""Entry point of the `signoff` command: service roles, developer tools and the approver's commands."""

from __future__ import annotations

import click

from signoff import __version__
from signoff.api.service import api
from signoff.approval.service import approval
from signoff.cli.access_keys import access_keys
from signoff.cli.approver import COMMANDS as APPROVER_COMMANDS
from signoff.cli.bench import bench
from signoff.cli.deliveries import deliveries
from signoff.cli.dev import dev
from signoff.cli.migrate import migrate
from signoff.cli.schemas import schemas
from signoff.cli.tokens import tokens
from signoff.executor.cli import COMMANDS as EXECUTOR_COMMANDS
from signoff.executor.service import executor
from signoff.notifier.service import notifier


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="signoff")
def cli() -> None:
    """signoff: approval gates for CD pipelines, on Kafka and PostgreSQL."""


cli.add_command(dev)
cli.add_command(schemas)
cli.add_command(migrate)
cli.add_command(approval)
cli.add_command(notifier)
cli.add_command(deliveries)
cli.add_command(tokens)
cli.add_command(access_keys)
cli.add_command(bench)
for command in APPROVER_COMMANDS:
    cli.add_command(command)
cli.add_command(executor)
cli.add_command(api)
for command in EXECUTOR_COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="signoff")
