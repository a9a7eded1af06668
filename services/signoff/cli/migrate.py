"""`signoff migrate`: apply every service schema's migrations (the Kubernetes migrations Job runs this)."""

from __future__ import annotations

import asyncio

import click

from signoff.cli.errors import CliError
from signoff.cli.plumbing import cli_settings
from signoff.runtime.logging import configure_logging
from signoff.runtime.migrations import MigrationError, migrate_all
from signoff.runtime.settings import Settings
from signoff.runtime.startup import mask_password


@click.command()
def migrate() -> None:
    """Create or upgrade the database schemas of every service (idempotent; safe to run concurrently)."""
    settings = cli_settings(Settings)  # an invalid setting: one line, as for every command
    configure_logging(settings.log_level, settings.log_format, role="migrate")
    dsn = settings.database_url.get_secret_value()
    try:
        asyncio.run(migrate_all(dsn))
    except (MigrationError, OSError) as exc:
        raise CliError(f"migration failed: {mask_password(str(exc), dsn)}") from exc
    except Exception as exc:  # asyncpg errors (bad DSN, auth): one line for the operator, not a traceback
        raise CliError(f"migration failed: {mask_password(f'{type(exc).__name__}: {exc}', dsn)}") from exc
