"""`signoff tokens create|list|revoke` (admin, server-side: it needs the database) and `signoff dev token USER` (a
token for a user of the running dev stack's directory).

A token's text is printed once, alone on stdout (so `TOKEN=$(signoff tokens create --user alice)` works); what it
is and when it expires goes to stderr. It is stored only as its SHA-256 digest (see signoff.api.identity).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import click
from pydantic import SecretStr

from signoff.api.identity import PERMISSIONS, check_token_lifetime, issue_token
from signoff.api.repository import ApiRepository, ApiToken
from signoff.approval.repository import ApprovalRepository
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import check_user, cli_settings, echo_json, run_with_connection
from signoff.cli.terminal import echo
from signoff.contracts.durations import DurationError, parse_duration
from signoff.devstack.stack import default_state_dir
from signoff.runtime.devenv import ENV_FILE, find_env_file, read_env_file, supervisor_pid
from signoff.runtime.settings import Settings

DEV_TOKEN_LIFETIME = timedelta(days=7)


def _now() -> datetime:
    return datetime.now(UTC)


def _lifetime(text: str) -> timedelta:
    try:
        lifetime = parse_duration(text)
    except DurationError as exc:
        raise CliUsageError(f"--expires: {exc}") from None
    try:
        return check_token_lifetime(lifetime)
    except ValueError as exc:
        raise CliUsageError(f"--expires: {exc}") from None


def _schemas_missing(what: str) -> CliError:
    return CliError(f"the {what} schema is missing: run `signoff migrate`")


async def _create(
    conn: asyncpg.Connection, *, user: str, name: str, permissions: tuple[str, ...], lifetime: timedelta
) -> tuple[ApiToken, str, list[str]]:
    try:
        groups = await ApprovalRepository().groups_of_user(conn, user)
    except asyncpg.UndefinedTableError:
        raise _schemas_missing("approval") from None
    try:
        async with conn.transaction():
            token, text = await issue_token(
                conn, ApiRepository(), user=user, name=name, permissions=permissions, lifetime=lifetime, now=_now()
            )
    except asyncpg.UndefinedTableError:
        raise _schemas_missing("api") from None
    return token, text, groups


def _announce(token: ApiToken, groups: list[str]) -> None:
    permissions = f", permissions {', '.join(sorted(token.permissions))}" if token.permissions else ""
    echo(
        f"created API token {token.id} ({token.name!r}) for {token.user_id}{permissions}, "
        f"expires {token.expires_at.isoformat()}; it is shown only this once",
        err=True,
    )
    if not groups:
        echo(
            f"warning: {token.user_id} is not in the approval directory: the token authenticates, "
            "but the approval service refuses that user's decisions until the directory lists them",
            err=True,
        )


@click.group()
def tokens() -> None:
    """Personal API tokens for `signoff api` (admin: run where the database is reachable)."""


@tokens.command("create")
@click.option("--user", required=True, help="The directory user the token authenticates as.")
@click.option("--expires", default="30d", show_default=True, help="Lifetime: `30d`, `12h`, `P90D`, …")
@click.option("--name", default="default", show_default=True, help="What the token is for (shown by `tokens list`).")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    type=click.Choice(sorted(PERMISSIONS)),
    help="Extra rights: `admin` (abort any execution), `act_on_behalf` (a service principal deciding for users). "
    "Repeatable.",
)
def create(user: str, expires: str, name: str, permissions: tuple[str, ...]) -> None:
    """Create a token for USER and print it (only the token, on stdout; store it now: it is never shown again)."""
    if not user.strip():
        raise CliUsageError("--user must not be empty")
    check_user("--user", user)
    if not name.strip():
        raise CliUsageError("--name must not be empty")
    lifetime = _lifetime(expires)
    settings = cli_settings(Settings)
    token, text, groups = run_with_connection(
        settings, lambda conn: _create(conn, user=user, name=name, permissions=permissions, lifetime=lifetime)
    )
    _announce(token, groups)
    echo(text)


def _row(token: ApiToken, now: datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "user": token.user_id,
        "name": token.name,
        "permissions": sorted(token.permissions),
        "state": token.state(now),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


@tokens.command("list")
@click.option("--user", default=None, help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(user: str | None, as_json: bool) -> None:
    """List tokens: id, user, name, permissions, state, expiry and last use (never the token or its digest)."""
    settings = cli_settings(Settings)

    async def read(conn: asyncpg.Connection) -> list[ApiToken]:
        try:
            return await ApiRepository().list_tokens(conn, user)
        except asyncpg.UndefinedTableError:
            raise _schemas_missing("api") from None

    now = _now()
    rows = [_row(token, now) for token in run_with_connection(settings, read)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no tokens")
        return
    for row in rows:
        permissions = f"  [{', '.join(row['permissions'])}]" if row["permissions"] else ""
        last_used = row["last_used_at"].isoformat() if row["last_used_at"] else "never"
        echo(
            f"{row['id']}  {row['user']}  {row['name']!r}{permissions}  {row['state']}  "
            f"expires {row['expires_at'].isoformat()}  last used {last_used}"
        )


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
def revoke(token_id: str) -> None:
    """Revoke the token ID at once: every later request with it is refused (401 revoked_token)."""
    settings = cli_settings(Settings)
    now = _now()

    async def work(conn: asyncpg.Connection) -> ApiToken | None:
        try:
            return await ApiRepository().revoke_token(conn, token_id, now)
        except asyncpg.UndefinedTableError:
            raise _schemas_missing("api") from None

    token = run_with_connection(settings, work)
    if token is None:
        raise CliError(f"no API token {token_id}")
    assert token.revoked_at is not None
    if token.revoked_at < now:
        echo(
            f"API token {token.id} ({token.user_id}, {token.name!r}) was already revoked at "
            f"{token.revoked_at.isoformat()}"
        )
        return
    echo(f"revoked API token {token.id} ({token.user_id}, {token.name!r})")


# ---------------------------------------------------------------------------------------------------- dev stack


@click.command("token")
@click.argument("user")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The dev stack's state dir [default: the running one found from here, else $SIGNOFF_HOME/dev or "
    "./.signoff/dev].",
)
def dev_token(user: str, state_dir: Path | None) -> None:
    """Print a token (name `dev`, valid 7 days) for USER of the running dev stack's directory (e.g. alice, dana).

    Refused outside a dev stack: production tokens come from `signoff tokens create`."""
    check_user("USER", user)
    if state_dir is None:
        found = find_env_file()
        state_dir = found.parent if found is not None else default_state_dir()
    state_dir = state_dir.absolute()
    env_file = state_dir / ENV_FILE
    if supervisor_pid(state_dir) is None or not env_file.is_file():
        raise CliError(
            f"no dev stack is running from {state_dir}; `signoff dev token` only serves a dev stack "
            "(start one with `signoff dev up --detach`; elsewhere use `signoff tokens create`)"
        )
    dsn = read_env_file(env_file).get("SIGNOFF_DATABASE_URL")
    if not dsn:
        raise CliError(f"the dev stack's env file {env_file} names no SIGNOFF_DATABASE_URL")
    # The stack's own database, whatever SIGNOFF_DATABASE_URL this shell exports.
    settings = Settings(database_url=SecretStr(dsn))

    async def work(conn: asyncpg.Connection) -> tuple[ApiToken, str, list[str]]:
        try:
            groups = await ApprovalRepository().groups_of_user(conn, user)
        except asyncpg.UndefinedTableError:
            raise _schemas_missing("approval") from None
        if not groups:
            raise CliError(f"{user} is not in the dev stack's directory; a dev token is only for a directory user")
        return await _create(conn, user=user, name="dev", permissions=(), lifetime=DEV_TOKEN_LIFETIME)

    token, text, groups = run_with_connection(settings, work)
    _announce(token, groups)
    echo(text)
