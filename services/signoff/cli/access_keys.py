"""`signoff access-keys create|list|revoke|new-credentials-key` (admin, server-side: it needs the database and the
api's credentials key) and `signoff dev access-key USER` (a key for a user of the running dev stack's directory).

An access key is what the AWS CLI and the SDKs sign CodePipeline requests with (docs/codepipeline.md). `create`
prints it once, alone on stdout, as two `NAME=value` lines (`eval "$(signoff access-keys create --user dana)"`
exports them); its secret is stored only encrypted (see signoff.api.access_keys).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import click
from pydantic import SecretStr

from signoff.api.access_keys import CredentialsKeyError, SecretBox, issue_access_key, new_credentials_key
from signoff.api.repository import AccessKey, ApiRepository
from signoff.api.settings import ApiSettings
from signoff.approval.repository import ApprovalRepository
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import check_user, cli_settings, echo_json, run_with_connection
from signoff.cli.terminal import echo
from signoff.devstack.stack import CREDENTIALS_KEY_FILE, default_state_dir
from signoff.runtime.devenv import ENV_FILE, find_env_file, read_env_file, supervisor_pid
from signoff.runtime.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


def _schemas_missing(what: str) -> CliError:
    return CliError(f"the {what} schema is missing: run `signoff migrate`")


def _box(key: str | None) -> SecretBox:
    if not key:
        raise CliError("SIGNOFF_API_CREDENTIALS_KEY is not set: access keys are encrypted with the api's key")
    try:
        return SecretBox.from_key(key)
    except CredentialsKeyError as exc:
        raise CliError(f"SIGNOFF_API_CREDENTIALS_KEY: {exc}") from None


async def _create(
    conn: asyncpg.Connection, box: SecretBox, user: str, *, known_only: bool
) -> tuple[AccessKey, str, list[str]]:
    try:
        groups = await ApprovalRepository().groups_of_user(conn, user)
    except asyncpg.UndefinedTableError:
        raise _schemas_missing("approval") from None
    if known_only and not groups:
        raise CliError(f"{user} is not in the dev stack's directory; a dev access key is only for a directory user")
    try:
        async with conn.transaction():
            key, secret = await issue_access_key(conn, ApiRepository(), box, user=user, now=_now())
    except asyncpg.UndefinedTableError:
        raise _schemas_missing("api") from None
    return key, secret, groups


def _print_created(key: AccessKey, secret: str, groups: list[str]) -> None:
    echo(
        f"created access key {key.id} for {key.user_id}; the secret is shown only this once "
        "(use them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY with "
        "`aws codepipeline --endpoint-url $SIGNOFF_API_URL`)",
        err=True,
    )
    if not groups:
        echo(
            f"warning: {key.user_id} is not in the approval directory: the key authenticates, "
            "but the approval service refuses that user's decisions until the directory lists them",
            err=True,
        )
    echo(f"AWS_ACCESS_KEY_ID={key.id}")
    echo(f"AWS_SECRET_ACCESS_KEY={secret}")


@click.group("access-keys")
def access_keys() -> None:
    """AWS-style access keys for the CodePipeline wire API (admin: run where the database is reachable)."""


@access_keys.command("create")
@click.option("--user", required=True, help="The directory user the key signs as (the approver of its votes).")
def create(user: str) -> None:
    """Create an access key for USER and print it (AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… on stdout;
    store the secret now: it is never shown again)."""
    if not user.strip():
        raise CliUsageError("--user must not be empty")
    check_user("--user", user)
    settings = cli_settings(ApiSettings)
    key = settings.api_credentials_key.get_secret_value() if settings.api_credentials_key else None
    box = _box(key)
    created, secret, groups = run_with_connection(settings, lambda conn: _create(conn, box, user, known_only=False))
    _print_created(created, secret, groups)


def _row(key: AccessKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "user": key.user_id,
        "state": key.state(),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


@access_keys.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(user: str | None, as_json: bool) -> None:
    """List access keys: id, user, state, creation and last use (never a secret)."""
    settings = cli_settings(Settings)

    async def read(conn: asyncpg.Connection) -> list[AccessKey]:
        try:
            return await ApiRepository().list_access_keys(conn, user)
        except asyncpg.UndefinedTableError:
            raise _schemas_missing("api") from None

    rows = [_row(key) for key in run_with_connection(settings, read)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no access keys")
        return
    for row in rows:
        last_used = row["last_used_at"].isoformat() if row["last_used_at"] else "never"
        echo(
            f"{row['id']}  {row['user']}  {row['state']}  created {row['created_at'].isoformat()}  "
            f"last used {last_used}"
        )


@access_keys.command("revoke")
@click.argument("key_id", metavar="ID")
def revoke(key_id: str) -> None:
    """Revoke the access key ID at once: every later request signed with it is refused
    (UnrecognizedClientException)."""
    settings = cli_settings(Settings)
    now = _now()

    async def work(conn: asyncpg.Connection) -> AccessKey | None:
        try:
            return await ApiRepository().revoke_access_key(conn, key_id, now)
        except asyncpg.UndefinedTableError:
            raise _schemas_missing("api") from None

    key = run_with_connection(settings, work)
    if key is None:
        raise CliError(f"no access key {key_id}")
    assert key.revoked_at is not None
    if key.revoked_at < now:
        echo(f"access key {key.id} ({key.user_id}) was already revoked at {key.revoked_at.isoformat()}")
        return
    echo(f"revoked access key {key.id} ({key.user_id})")


@access_keys.command("new-credentials-key")
def new_key() -> None:
    """Print a fresh credentials key (a Fernet key) for SIGNOFF_API_CREDENTIALS_KEY."""
    echo(new_credentials_key())


# ---------------------------------------------------------------------------------------------------- dev stack


@click.command("access-key")
@click.argument("user")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The dev stack's state dir [default: the running one found from here, else $SIGNOFF_HOME/dev or "
    "./.signoff/dev].",
)
def dev_access_key(user: str, state_dir: Path | None) -> None:
    """Print an access key for USER of the running dev stack's directory (AWS_ACCESS_KEY_ID=… and
    AWS_SECRET_ACCESS_KEY=…), for `aws codepipeline --endpoint-url`.

    Refused outside a dev stack: production keys come from `signoff access-keys create`."""
    check_user("USER", user)
    if state_dir is None:
        found = find_env_file()
        state_dir = found.parent if found is not None else default_state_dir()
    state_dir = state_dir.absolute()
    env_file = state_dir / ENV_FILE
    key_file = state_dir / CREDENTIALS_KEY_FILE
    if supervisor_pid(state_dir) is None or not env_file.is_file() or not key_file.is_file():
        raise CliError(
            f"no dev stack is running from {state_dir}; `signoff dev access-key` only serves a dev stack "
            "(start one with `signoff dev up --detach`; elsewhere use `signoff access-keys create`)"
        )
    dsn = read_env_file(env_file).get("SIGNOFF_DATABASE_URL")
    if not dsn:
        raise CliError(f"the dev stack's env file {env_file} names no SIGNOFF_DATABASE_URL")
    box = _box(key_file.read_text().strip())
    settings = Settings(database_url=SecretStr(dsn))
    created, secret, groups = run_with_connection(settings, lambda conn: _create(conn, box, user, known_only=True))
    _print_created(created, secret, groups)
