"""What every client command shares: settings with one-line errors, a short-lived database connection and `--json`
output. (The roles use `signoff.runtime`; these are for commands that run once and exit.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import ValidationError

from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.terminal import echo
from signoff.runtime.db import create_pool
from signoff.runtime.settings import Settings, load_settings, setting_problem
from signoff.runtime.startup import mask_password

S = TypeVar("S", bound=Settings)
T = TypeVar("T")


def jsonable(value: Any) -> Any:
    """`value` with datetimes as ISO 8601 text and tuples as lists, ready for json.dumps."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def echo_json(value: Any) -> None:
    """Print `value` as indented JSON with sorted keys (the `--json` output of the commands)."""
    echo(json.dumps(jsonable(value), indent=2, sort_keys=True))


def check_user(what: str, user: str) -> None:
    """A usage error naming `what` (the option or argument) unless `user` is a user id as the wire contract has it
    (what the approval service checks every decision's approver against): a credential for anything else
    authenticates, yet every decision with it is refused."""
    from signoff.api.identity import check_user_id  # the admin commands' import; `pending` does not need it

    try:
        check_user_id(user)
    except ValueError as exc:
        raise CliUsageError(f"{what}: {exc}") from None


def cli_settings(settings_class: type[S]) -> S:
    """Settings from the environment (or the dev stack's env file); an invalid one is a one-line error."""
    try:
        return load_settings(settings_class)
    except ValidationError as exc:
        raise CliError(f"invalid setting {setting_problem(exc, settings_class)}") from None


@asynccontextmanager
async def connection(
    settings: Settings, *, unreachable: str = "cannot reach the database"
) -> AsyncIterator[asyncpg.Connection]:
    """One connection for the command; an unreachable database is a one-line error starting with `unreachable`."""
    dsn = settings.database_url.get_secret_value()
    try:
        pool = await create_pool(dsn, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"{unreachable}: {mask_password(str(exc), dsn)}") from None
    except ValueError as exc:  # asyncpg's ClientConfigurationError, or a URL it cannot even split (a port `abc`)
        raise CliError(
            "SIGNOFF_DATABASE_URL is not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE): "
            f"{mask_password(str(exc), dsn)}"
        ) from None
    try:
        async with pool.acquire() as conn:
            yield conn
    finally:
        await pool.close()


def run_with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection, to completion, from synchronous command code."""

    async def main() -> T:
        async with connection(settings) as conn:
            return await work(conn)

    return asyncio.run(main())
