"""Entry point of the `signoff` command: service roles, developer tools and the approver's commands."""

from __future__ import annotations

import click

from signoff import __version__
from signoff.cli.dev import dev


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="signoff")
def cli() -> None:
    """signoff: approval gates for CD pipelines, on Kafka and PostgreSQL."""


cli.add_command(dev)


def main() -> None:
    cli(prog_name="signoff")
