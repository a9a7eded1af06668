"""`signoff migrate`: apply every service schema's migrations (the Kubernetes migrations Job runs this)."""

from __future__ import annotations

import asyncio

import click

from signoff.cli.errors import CliError
from signoff.runtime.logging import configure_logging
from signoff.runtime.migrations import MigrationError, migrate_all
from signoff.runtime.settings import load_settings


@click.command()
def migrate() -> None:
    """Create or upgrade the database schemas of every service (idempotent; safe to run concurrently)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, role="migrate")
    try:
        asyncio.run(migrate_all(settings.database_url.get_secret_value()))
    except (MigrationError, OSError) as exc:
        raise CliError(f"migration failed: {exc}") from exc
    except Exception as exc:  # asyncpg errors (bad DSN, auth): one line for the operator, not a traceback
        raise CliError(f"migration failed: {type(exc).__name__}: {exc}") from exc
