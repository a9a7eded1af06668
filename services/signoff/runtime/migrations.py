"""SQL migrations per service schema.

Each service owns one PostgreSQL schema (`approval`, `executor`, `notifier`, `api`). Its migrations are the runtime's
own (inbox, outbox: the same tables in every schema) followed by the service's SQL files, applied in order under a
transaction-scoped advisory lock, so replicas starting together (or the migrations Job racing a pod) apply each
migration exactly once. Applied migrations are recorded with a checksum; an edited, already-applied file is an
error rather than a silent divergence.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    """One SQL file; `{schema}` in its text is replaced by the service's schema name."""

    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """A migration could not be applied, or an applied one was edited afterwards."""


def load_migrations(package: str, component: str) -> list[Migration]:
    """The `NNNN_name.sql` files of `package` (a folder with an __init__.py), in version order."""
    found = []
    for entry in importlib.resources.files(package).iterdir():
        if match := _FILE_NAME.match(entry.name):
            found.append(Migration(component, int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def runtime_migrations() -> list[Migration]:
    """The tables every service schema has: inbox, outbox, and the dead-letter log."""
    return load_migrations("signoff.runtime.sql", "runtime")


async def migrate(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply the runtime's and then `migrations` to `schema`; returns the names applied now."""
    if not _SCHEMA_NAME.match(schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    applied_now: list[str] = []
    async with conn.transaction():
        # Transaction-scoped, so a crashed migrator never leaves the lock held.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('signoff.migrate.' || $1))", schema)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                    component text NOT NULL,
                    version int NOT NULL,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, version))"""
        )
        rows = await conn.fetch(f'SELECT component, version, name, checksum FROM "{schema}".schema_migrations')  # noqa: S608
        done = {(r["component"], r["version"]): r for r in rows}
        for migration in [*runtime_migrations(), *migrations]:
            previous = done.get((migration.component, migration.version))
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: migration {migration.component}/{migration.name} changed after it was applied"
                    )
                continue
            await conn.execute(migration.sql.replace("{schema}", schema))
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (component, version, name, checksum) VALUES ($1,$2,$3,$4)',  # noqa: S608
                migration.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(f"{migration.component}/{migration.name}")
    if applied_now:
        log.info("migrations_applied", schema=schema, migrations=applied_now)
    return applied_now


# Service schemas and the packages holding their SQL; a service registers itself here when it is built.
SERVICE_MIGRATIONS: dict[str, str] = {
    "approval": "signoff.approval.sql",
    "executor": "signoff.executor.sql",
    "notifier": "signoff.notifier.sql",
    "api": "signoff.api.sql",
}


async def migrate_all(dsn: str) -> None:
    """Migrate every registered service schema (what `signoff migrate` and the test template do)."""
    conn = await asyncpg.connect(dsn)
    try:
        for schema, package in SERVICE_MIGRATIONS.items():
            await migrate(conn, schema, load_migrations(package, schema))
    finally:
        await conn.close()
