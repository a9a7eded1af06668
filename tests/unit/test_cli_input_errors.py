"""Invalid CLI input is one `error: …` line and a non-zero exit, never a traceback, and it is refused before
anything is sent: files that are not UTF-8, tokens that cannot be an HTTP header, empty ids or ids with a `/`,
token lifetimes past the maximum, user ids the wire contract refuses, a database URL that is not one. An answer
that is not the API's (a redirect, a web server's HTML page, a body that is not JSON) is one line with its status.

No signoff infrastructure: the CLI runs in-process (click's CliRunner). "Before anything is sent" is shown with
SIGNOFF_API_URL at a port nobody listens on: a command that tried to send would say that no API is reachable. The
answers that are not the API's come from another real web server at that URL, Python's own static file server
(`http.server`), as when the URL names the wrong host or a proxy answers. That ids reach the real API as one
segment, and that it refuses bad tokens while it is up: tests/integration/api/test_cli.py."""

from __future__ import annotations

import functools
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from signoff.api import identity
from signoff.cli.main import cli

TOKEN = "sgf_" + "t" * 43
NOT_UTF8 = b"\xff\xfe"  # what `printf '\xff\xfe' > bin.json` writes
UNREACHABLE = "error: no signoff API is reachable"


@pytest.fixture
def nobody() -> str:
    """The URL of a loopback port nobody listens on (bound, then closed: the kernel does not hand it out again at
    once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Python's static file server on a loopback port, serving a folder the test fills: (its URL, the folder)."""
    root = tmp_path / "site"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(tmp_path: Path, nobody: str) -> dict[str, str | None]:
    """A user's environment: an API URL nobody answers at and a well-formed token; no dev stack, no saved login, no
    database."""
    return {
        "SIGNOFF_API_URL": nobody,
        "SIGNOFF_TOKEN": TOKEN,
        "SIGNOFF_HOME": str(tmp_path / "no-dev-stack"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SIGNOFF_CATALOG_FILE": None,
        "SIGNOFF_DATABASE_URL": None,
    }


def _signoff(env: dict[str, str | None], *args: str, **more: str | None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**env, **more})


def _one_line_error(result: Result, code: int = 1) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------------------------------------------- files


def test_an_input_json_file_that_is_not_utf8_is_one_line(env, tmp_path: Path) -> None:
    binary = tmp_path / "bin.json"
    binary.write_bytes(NOT_UTF8)

    error = _one_line_error(_signoff(env, "put-approval-result", "--cli-input-json", f"file://{binary}"))

    assert error == f"error: {binary} is not UTF-8 text (byte 0: invalid start byte); JSON must be UTF-8"


def test_a_pipeline_file_that_is_not_utf8_is_one_line(env, tmp_path: Path) -> None:
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"pipeline:\n  name: caf\xe9\n")

    error = _one_line_error(_signoff(env, "run", str(binary)))

    assert error == f"error: {binary} is not UTF-8 text (byte 21: invalid continuation byte)"


def test_utf8_input_is_read_as_utf8_whatever_the_locale(env, tmp_path: Path) -> None:
    doc = tmp_path / "approve.json"
    doc.write_text(
        json.dumps(
            {"pipelineName": "p", "stageName": "s", "actionName": "a", "token": "t"}
            | {"result": {"status": "Approved", "summary": "ça va"}},
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )

    result = _signoff(env, "put-approval-result", "--cli-input-json", f"file://{doc}", LC_ALL="C", LANG="C")

    assert _one_line_error(result).startswith(UNREACHABLE)  # the file was read, and then it was to be sent


# ---------------------------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", ["sgf_ä", "sgf_a\nb", "sgf_a b", "sgf_\x7f", "   "])
def test_a_token_that_cannot_be_a_bearer_token_is_refused_before_any_request(env, token: str) -> None:
    error = _one_line_error(_signoff(env, "pending", SIGNOFF_TOKEN=token))

    assert error.startswith("error: the token is not a valid token: a token is printable ASCII")
    assert token.strip() not in error or not token.strip()  # the token is never echoed


def test_a_token_with_surrounding_whitespace_is_sent_trimmed(env) -> None:
    assert _one_line_error(_signoff(env, "pending", SIGNOFF_TOKEN=f" {TOKEN}\n")).startswith(UNREACHABLE)


def test_login_refuses_such_a_token_and_saves_nothing(env, nobody: str, tmp_path: Path) -> None:
    result = _signoff(env, "login", "--url", nobody, SIGNOFF_LOGIN_TOKEN="sgf_ä")

    assert "the token is not a valid token" in _one_line_error(result)
    assert not (tmp_path / "config" / "signoff" / "credentials.json").exists()


def test_an_api_url_that_is_no_url_is_one_line(env) -> None:
    error = _one_line_error(_signoff(env, "pending", SIGNOFF_API_URL="http://[::1"))

    assert error.startswith("error: the signoff API URL http://[::1 is not a valid URL")


# ---------------------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("show", ""), "GATE_ID"),
        (("audit", ""), "GATE_ID"),
        (("approve", ""), "GATE_ID"),
        (("reject", ""), "GATE_ID"),
        (("logs", ""), "EXECUTION"),
        (("abort", ""), "EXECUTION"),
        (("get-pipeline-state", "--name", ""), "--name"),
    ],
)
def test_an_empty_id_is_a_usage_error_before_any_request(env, args: tuple[str, ...], what: str) -> None:
    assert _one_line_error(_signoff(env, *args), code=2) == f"error: {what} must not be empty"


@pytest.mark.parametrize(
    ("args", "what", "value"),
    [
        (("show", "../me"), "GATE_ID", "../me"),
        (("approve", "a/b"), "GATE_ID", "a/b"),
        (("logs", "x/../../me"), "EXECUTION", "x/../../me"),
        (("get-pipeline-state", "--name", "a/b"), "--name", "a/b"),
    ],
)
def test_an_id_with_a_slash_is_a_usage_error_before_any_request(
    env, args: tuple[str, ...], what: str, value: str
) -> None:
    error = _one_line_error(_signoff(env, *args), code=2)

    assert error == f"error: {what} {value!r} is not an id: ids never contain '/'"


# ---------------------------------------------------------------------------------------------------- answers


def test_an_answer_that_is_not_the_apis_is_one_line_with_its_status(env, web_server: tuple[str, Path]) -> None:
    """Another web server at SIGNOFF_API_URL: its redirect, its HTML error page and a file it serves are each one
    line naming the request and the status, never a KeyError or a JSON error."""
    url, root = web_server
    gates = root / "api" / "v1" / "gates"
    (gates / "a-folder").mkdir(parents=True)  # the server redirects a folder's path to the path with a slash
    (gates / "a-file").write_text("hello\n")

    def error(gate_id: str) -> str:
        return _one_line_error(_signoff(env, "show", gate_id, SIGNOFF_API_URL=url))

    assert error("a-folder") == (
        "error: the signoff API answered GET /api/v1/gates/a-folder with HTTP 301 Moved Permanently "
        "(a redirect to /api/v1/gates/a-folder/)"
    )
    missing = error("g1")
    assert missing.startswith("error: the signoff API answered GET /api/v1/gates/g1 with HTTP 404 File not found: ")
    assert "<html" in missing.lower() or "<!doctype" in missing.lower()
    assert error("a-file") == "error: the signoff API answered GET /api/v1/gates/a-file with HTTP 200 OK: hello"


# ---------------------------------------------------------------------------------------------------- admin commands


@pytest.mark.parametrize("expires", ["99999999d", "P1096D", "157w"])
def test_tokens_create_refuses_a_lifetime_over_the_maximum(env, expires: str) -> None:
    result = _signoff(env, "tokens", "create", "--user", "dana", "--expires", expires)

    assert _one_line_error(result, code=2) == (
        "error: --expires: a token's lifetime is at most 1095d (3 years); every token expires"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "what", "user"),
    [
        (("tokens", "create", "--user", " bob"), "--user", " bob"),
        (("tokens", "create", "--user", "bob\t"), "--user", "bob\t"),
        (("tokens", "create", "--user", "team/bob"), "--user", "team/bob"),
        (("access-keys", "create", "--user", "bo b"), "--user", "bo b"),
        (("dev", "token", " bob"), "USER", " bob"),
        (("dev", "access-key", "team/bob"), "USER", "team/bob"),
    ],
)
def test_credentials_are_refused_for_a_user_id_the_wire_contract_refuses(
    env, args: tuple[str, ...], what: str, user: str
) -> None:
    result = _signoff(env, *args)

    assert _one_line_error(result, code=2) == (
        f"error: {what}: {user!r} is not a valid user id: String should match pattern '^[^\\s/]+$'"
    )
    assert result.stdout == ""


def test_a_user_id_over_the_contracts_length_is_refused(env) -> None:
    error = _one_line_error(_signoff(env, "tokens", "create", "--user", "u" * 129), code=2)

    assert error.endswith("is not a valid user id: String should have at most 128 characters")


@pytest.mark.parametrize(
    ("user", "lifetime", "message"),
    [
        (" bob", timedelta(days=1), "is not a valid user id"),
        ("bob", timedelta(days=3 * 365, seconds=1), "a token's lifetime is at most 1095d"),
        ("bob", timedelta(days=99_999_999), "a token's lifetime is at most 1095d"),
        ("bob", timedelta(0), "a token's lifetime must be positive"),
    ],
)
async def test_issue_token_holds_every_caller_to_the_same_rules(user: str, lifetime: timedelta, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        # Refused before the repository is touched (there is none here).
        await identity.issue_token(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            user=user,
            name="n",
            permissions=(),
            lifetime=lifetime,
            now=datetime.now(UTC),
        )


@pytest.mark.parametrize("url", ["", "notadsn"])
def test_migrate_refuses_a_database_url_that_is_not_one_in_one_line(env, url: str) -> None:
    error = _one_line_error(_signoff(env, "migrate", SIGNOFF_DATABASE_URL=url))
    assert error.startswith("error: invalid setting SIGNOFF_DATABASE_URL: not a PostgreSQL URL"), error


def test_the_longest_lifetime_and_any_contract_user_id_are_accepted() -> None:
    assert identity.check_token_lifetime(identity.MAX_TOKEN_LIFETIME) == timedelta(days=1095)
    assert identity.check_user_id("alice@example.com") == "alice@example.com"


@pytest.mark.parametrize(
    "url",
    [
        "notadsn",
        "",  # not libpq's defaults (the local socket): some other database than the one meant
        "mysql://dana:s3cr3t-pw@db.example.com/signoff",
        "postgresql://dana:s3cr3t-pw@db.example.com:abc/signoff",
        "postgresql://dana:s3cr3t-pw@[::1/signoff",
        "postgresql://dana:s3cr3t-pw@db.example.com/signoff?sslmode=sometimes",
    ],
)
@pytest.mark.parametrize("args", [("groups", "list"), ("tokens", "list"), ("deliveries",)])
def test_a_database_url_that_is_not_one_is_one_line_without_its_password(env, url: str, args: tuple[str, ...]) -> None:
    result = _signoff(env, *args, SIGNOFF_DATABASE_URL=url)

    error = _one_line_error(result)
    # Refused as a setting (no postgresql:// scheme) or when asyncpg reads it (the rest of the URL).
    assert error.startswith(
        ("error: SIGNOFF_DATABASE_URL is not", "error: invalid setting SIGNOFF_DATABASE_URL: not")
    ), error
    assert "a PostgreSQL URL (postgresql://USER" in error, error
    assert "s3cr3t" not in result.output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("pending", "--limit", "0"), "error: Invalid value for '--limit': 0 is not in the range 1<=x<=500. "),
        (("nosuch",), "error: No such command 'nosuch'. (see `"),  # `signoff --help` (CliRunner calls it `cli`)
        (("approve",), "error: Missing argument 'GATE_ID'. (see `"),
        (("tokens", "create", "--permission", "root"), "error: Invalid value for '--permission': "),
    ],
)
def test_clicks_own_usage_errors_are_one_line_too(env, args: tuple[str, ...], error: str) -> None:
    assert _one_line_error(_signoff(env, *args), code=2).startswith(error)


def test_help_and_version_still_exit_0(env) -> None:
    assert _signoff(env, "--version").exit_code == 0
    shown = _signoff(env, "pending", "--help")
    assert shown.exit_code == 0 and shown.stdout.startswith("Usage: ") and " pending [OPTIONS]" in shown.stdout
