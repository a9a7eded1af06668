"""`signoff tokens …` and `signoff dev token` on a real PostgreSQL: the CLI runs in-process with click's CliRunner
(in a worker thread, as it runs its own event loop), configured only through SIGNOFF_* variables; what it created
is then used through the real Authenticator."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result

from signoff.api.identity import AuthenticationFailed, Authenticator
from signoff.api.repository import SCHEMA
from signoff.approval.repository import ApprovalRepository
from signoff.cli.main import cli
from signoff.runtime.db import create_pool
from signoff.runtime.devenv import ENV_FILE, PID_FILE

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def run(self, *args: str, **env: str) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli, list(args), env={**self.env, **env}, catch_exceptions=False)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await ApprovalRepository().replace_directory(
            conn, [("sre", "alice", "alice@example.com", {}), ("docs", "dana", None, {})]
        )
    yield pool
    await pool.close()


@pytest.fixture
def signoff(database_url: str, tmp_path: Path, pool) -> Cli:
    return Cli({"SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_DATABASE_URL": database_url})


async def test_create_prints_only_the_token_which_then_authenticates(signoff, pool):
    result = await signoff.run("tokens", "create", "--user", "alice", "--name", "laptop", "--expires", "12h")

    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    assert result.stdout == text + "\n" and text.startswith("sgf_")
    assert "created API token tok_" in result.stderr and "shown only this once" in result.stderr
    assert "warning" not in result.stderr
    principal = await Authenticator(pool, oidc=None).authenticate(f"Bearer {text}")
    assert principal.user == "alice" and principal.credential == "token"
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f'SELECT name, expires_at - created_at AS lifetime FROM "{SCHEMA}".tokens')  # noqa: S608
    assert (row["name"], row["lifetime"].total_seconds()) == ("laptop", 12 * 3600)


async def test_create_warns_about_a_user_outside_the_directory(signoff):
    result = await signoff.run("tokens", "create", "--user", "chatbot", "--permission", "act_on_behalf")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sgf_")
    assert "warning: chatbot is not in the approval directory" in result.stderr
    assert "permissions act_on_behalf" in result.stderr


async def test_list_shows_tokens_but_never_their_text(signoff):
    alice = (await signoff.run("tokens", "create", "--user", "alice", "--name", "laptop")).stdout.strip()
    dana = (await signoff.run("tokens", "create", "--user", "dana", "--permission", "admin")).stdout.strip()

    everyone = await signoff.run("tokens", "list")
    only_dana = await signoff.run("tokens", "list", "--user", "dana", "--json")

    assert everyone.exit_code == 0, everyone.output
    lines = everyone.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "alice  'laptop'  active" in lines[0] and "last used never" in lines[0]
    assert "dana  'default'  [admin]  active" in lines[1]
    rows = json.loads(only_dana.stdout)
    assert [(r["user"], r["permissions"], r["state"]) for r in rows] == [("dana", ["admin"], "active")]
    assert set(rows[0]) == {
        "id", "user", "name", "permissions", "state", "created_at", "expires_at", "last_used_at", "revoked_at"
    }  # fmt: skip
    for text in (alice, dana):
        assert text not in everyone.output and text not in only_dana.output


async def test_revoke_refuses_the_token_from_then_on(signoff, pool):
    text = (await signoff.run("tokens", "create", "--user", "alice")).stdout.strip()
    [row] = json.loads((await signoff.run("tokens", "list", "--json")).stdout)

    revoked = await signoff.run("tokens", "revoke", row["id"])
    again = await signoff.run("tokens", "revoke", row["id"])
    listed = json.loads((await signoff.run("tokens", "list", "--json")).stdout)

    assert revoked.exit_code == 0 and revoked.stdout == f"revoked API token {row['id']} (alice, 'default')\n"
    assert again.exit_code == 0 and "was already revoked at" in again.stdout
    assert listed[0]["state"] == "revoked"
    with pytest.raises(AuthenticationFailed) as caught:
        await Authenticator(pool, oidc=None).authenticate(f"Bearer {text}")
    assert caught.value.reason == "revoked_token"


async def test_bad_input_is_one_line_and_a_non_zero_exit(signoff, pool):
    cases = [
        (("tokens", "revoke", "tok_nope"), 1, "error: no API token tok_nope"),
        (("tokens", "create", "--user", "alice", "--expires", "soon"), 2, "error: --expires: invalid duration"),
        (("tokens", "create", "--user", "alice", "--expires", "0s"), 2, "error: --expires: a token's lifetime"),
        (("tokens", "create", "--user", " "), 2, "error: --user must not be empty"),
        (
            ("tokens", "create", "--user", "dana", "--expires", "99999999d"),
            2,
            "error: --expires: a token's lifetime is at most 1095d (3 years)",
        ),
        (
            ("tokens", "create", "--user", " bob"),
            2,
            "error: --user: ' bob' is not a valid user id: String should match pattern",
        ),
    ]
    for args, code, start in cases:
        result = await signoff.run(*args)
        assert result.exit_code == code, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), (args, result.stderr)
        assert result.stdout == ""
    async with pool.acquire() as conn:
        assert await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".tokens') == 0  # noqa: S608


async def test_an_unreachable_database_is_one_line(signoff):
    result = await signoff.run(
        "tokens", "list", SIGNOFF_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the database")


async def test_dev_token_is_refused_without_a_running_dev_stack(signoff, tmp_path):
    result = await signoff.run("dev", "token", "alice")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: no dev stack is running from {tmp_path / 'home' / 'dev'}; `signoff dev token` only serves a dev "
        "stack (start one with `signoff dev up --detach`; elsewhere use `signoff tokens create`)"
    )
    assert result.stdout == ""


@pytest.fixture
def dev_stack(tmp_path: Path, database_url: str) -> Path:
    """The two files by which a running dev stack is found (what `signoff dev up` writes): a supervisor pid file
    naming a live process (this test's) and the env file pointing at this test's database."""
    state_dir = tmp_path / "home" / "dev"
    state_dir.mkdir(parents=True)
    (state_dir / PID_FILE).write_text(str(os.getpid()))
    (state_dir / ENV_FILE).write_text(f"export SIGNOFF_DATABASE_URL='{database_url}'\n")
    return state_dir


async def test_dev_token_serves_a_directory_user_of_the_running_stack(signoff, dev_stack, pool):
    # The shell's own SIGNOFF_DATABASE_URL is ignored: a dev token is written to the stack's database.
    result = await signoff.run("dev", "token", "dana", SIGNOFF_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")

    assert result.exit_code == 0, result.output
    principal = await Authenticator(pool, oidc=None).authenticate(f"Bearer {result.stdout.strip()}")
    assert principal.user == "dana"
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f'SELECT name, expires_at - created_at AS lifetime FROM "{SCHEMA}".tokens')  # noqa: S608
    assert (row["name"], row["lifetime"].days) == ("dev", 7)


async def test_dev_token_is_refused_for_a_user_outside_the_directory(signoff, dev_stack, pool):
    result = await signoff.run("dev", "token", "mallory")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: mallory is not in the dev stack's directory; a dev token is only for a directory user"
    )
    async with pool.acquire() as conn:
        assert await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".tokens') == 0  # noqa: S608


async def test_dev_token_is_refused_when_the_stack_has_stopped(signoff, dev_stack):
    (dev_stack / PID_FILE).write_text("999999999")  # no such process

    result = await signoff.run("dev", "token", "alice")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: no dev stack is running from")
