"""The database roles of docs/deploying.md on a real PostgreSQL: its SQL block runs as written (role and database
names made unique to the test), the migrations role migrates every schema, every service role passes its start-up
migration check, and each role may do exactly what the page says: its own schema read-write, and for the api a
read-only view of the approval and executor schemas."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from signoff.runtime.migrations import SERVICE_MIGRATIONS, Migration, load_migrations, migrate, migrate_all
from tests.deploy.manifests import REPO
from tests.support.infra import Infra

pytestmark = pytest.mark.integration

DOC = REPO / "docs" / "deploying.md"
MARKER = "<!-- tests/deploy/test_database_roles.py runs this block"
SERVICE_ROLES = ("approval", "executor", "notifier", "api")
SCHEMAS = SERVICE_ROLES  # each service's schema is named after it
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
READ_WRITE = {"SELECT", "INSERT", "UPDATE", "DELETE"}
API_READS = ("approval", "executor")


def table_privileges(role: str, schema: str) -> set[str]:
    """What docs/deploying.md gives a service role on the tables of a schema."""
    if role == schema:
        return READ_WRITE
    if role == "api" and schema in API_READS:
        return {"SELECT"}
    return set()


def schema_privileges(role: str, schema: str) -> set[str]:
    if role == schema:
        return {"USAGE", "CREATE"}
    if role == "api" and schema in API_READS:
        return {"USAGE"}
    return set()


def documented_sql() -> str:
    """The ```sql block that follows the marker in docs/deploying.md."""
    text = DOC.read_text()
    assert MARKER in text, f"{DOC.name} lost the marker of its database roles block"
    match = re.search(r"```sql\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert match, "no ```sql block after the marker"
    return match.group(1)


def personalized(sql: str, suffix: str, database: str) -> str:
    """The block with this test's role names and database (roles are shared by every database of a server)."""
    assert "ON DATABASE signoff " in sql
    sql = re.sub(r"\bsignoff_(migrate|approval|executor|notifier|api)\b", rf"signoff_\1_{suffix}", sql)
    return sql.replace("ON DATABASE signoff ", f'ON DATABASE "{database}" ')


def migrations_of(schema: str) -> list[Migration]:
    """The service's own migrations (none for the api until it registers them in SERVICE_MIGRATIONS)."""
    package = SERVICE_MIGRATIONS.get(schema)
    return load_migrations(package, schema) if package else []


@dataclass
class RolesDatabase:
    """A fresh database set up by the documented block, and the passwords this test gave its roles."""

    name: str
    suffix: str
    admin_dsn: str
    passwords: dict[str, str]
    opened: list[asyncpg.Connection] = field(default_factory=list)

    def role(self, role: str) -> str:
        return f"signoff_{role}_{self.suffix}"

    def dsn(self, role: str) -> str:
        url, name = urlsplit(self.admin_dsn), self.role(role)
        return urlunsplit(url._replace(netloc=f"{name}:{self.passwords[name]}@{url.hostname}:{url.port}"))

    async def connect(self, role: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn(role))
        self.opened.append(conn)
        return conn


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[RolesDatabase]:
    suffix = uuid.uuid4().hex[:8]
    name = f"test_roles_{suffix}"
    roles = [f"signoff_{role}_{suffix}" for role in ("migrate", *SERVICE_ROLES)]
    created = RolesDatabase(name, suffix, infra.dsn(name), {role: secrets.token_urlsafe(16) for role in roles})
    admin = await asyncpg.connect(infra.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        setup = await asyncpg.connect(created.admin_dsn)
        try:
            await setup.execute(personalized(documented_sql(), suffix, name))
            for role, password in created.passwords.items():
                await setup.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
        finally:
            await setup.close()
        yield created
    finally:
        for conn in created.opened:
            await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in roles:
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def migrated(db: RolesDatabase) -> None:
    """What the migrations Job does (`signoff migrate`, as the migrations role)."""
    await migrate_all(db.dsn("migrate"))
    # The api's schema gets at least the runtime's tables (inbox, outbox, dead letters), so there is something to
    # check until the api registers its migrations in SERVICE_MIGRATIONS; then migrate_all has done it and this is
    # a no-op.
    migrator = await db.connect("migrate")
    await migrate(migrator, "api", [])


async def test_the_migrations_role_migrates_and_each_service_starts(db: RolesDatabase) -> None:
    """The Job migrates every schema; then each service's start-up check (as its own role) finds nothing to do."""
    await migrated(db)
    for role in SERVICE_ROLES:
        conn = await db.connect(role)
        assert await migrate(conn, role, migrations_of(role)) == [], role


async def test_each_role_has_exactly_the_documented_privileges(db: RolesDatabase) -> None:
    await migrated(db)
    admin = await asyncpg.connect(db.admin_dsn)
    try:
        tables = await admin.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])", list(SCHEMAS)
        )
        assert {t["schemaname"] for t in tables} == set(SCHEMAS)
        problems = []
        for role in SERVICE_ROLES:
            name = db.role(role)
            for schema in SCHEMAS:
                held = {
                    p
                    for p in ("USAGE", "CREATE")
                    if await admin.fetchval("SELECT has_schema_privilege($1, $2, $3)", name, schema, p)
                }
                if held != schema_privileges(role, schema):
                    problems.append(f"{role} on schema {schema}: {sorted(held)}")
            for table in tables:
                qualified = f'"{table["schemaname"]}"."{table["tablename"]}"'
                held = {
                    p
                    for p in TABLE_PRIVILEGES
                    if await admin.fetchval("SELECT has_table_privilege($1, $2, $3)", name, qualified, p)
                }
                if held != table_privileges(role, table["schemaname"]):
                    problems.append(f"{role} on {qualified}: {sorted(held)}")
    finally:
        await admin.close()
    assert problems == []


async def test_the_api_reads_approval_and_executor_and_writes_only_its_own(db: RolesDatabase) -> None:
    """As the api's role itself: every table of the approval and executor schemas reads, none of them writes, and
    its own schema's tables take writes."""
    await migrated(db)
    api = await db.connect("api")
    tables = await api.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])", list(SCHEMAS)
    )
    by_schema: dict[str, list[str]] = {}
    for t in tables:
        by_schema.setdefault(t["schemaname"], []).append(f'"{t["schemaname"]}"."{t["tablename"]}"')
    for schema in API_READS:
        for table in by_schema[schema]:
            await api.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 - names from pg_tables
            for write in await writes_of(api, table):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await api.execute(write)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await api.execute(f'CREATE TABLE "{schema}".api_was_here (x int)')
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await api.fetchval("SELECT count(*) FROM notifier.outbox")
    for table in by_schema["api"]:
        for write in await writes_of(api, table):
            await api.execute(write)


async def writes_of(conn: asyncpg.Connection, table: str) -> list[str]:
    """A DELETE and an UPDATE of `table` that change nothing: they test the privilege alone."""
    column = await conn.fetchval(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attidentity = '' AND attgenerated = '' ORDER BY attnum LIMIT 1",
        table,
    )
    return [
        f"DELETE FROM {table} WHERE false",  # noqa: S608 - names from pg_tables
        f'UPDATE {table} SET "{column}" = "{column}" WHERE false',  # noqa: S608
    ]


def test_the_block_names_every_service_schema() -> None:
    """A schema added to SERVICE_MIGRATIONS needs its grants in the documented block."""
    sql = documented_sql()
    for schema in {*SERVICE_MIGRATIONS, "api"}:
        assert f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION signoff_migrate;" in sql, schema
        assert f"GRANT USAGE, CREATE ON SCHEMA {schema} TO signoff_{schema};" in sql, schema
