"""A role that cannot start says why in one line and exits 1, naming the setting by its variable, without its value
(which may be a secret) and without a traceback: each role started as a process, as an operator starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from signoff.runtime.settings import Settings
from signoff.runtime.startup import StartupError, mask_password, role_serving, starting

SECRET = "hunter2-SECRETVALUE"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(role: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    environment |= {"SIGNOFF_HOME": str(tmp_path / "no-dev-stack"), "SIGNOFF_HTTP_PORT": "0", **env}
    return subprocess.run(
        [sys.executable, "-m", "signoff", role], env=environment, capture_output=True, text=True, timeout=120
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("role", "env", "expected"),
    [
        (
            "api",
            {"SIGNOFF_API_SESSION_SECRET": SECRET},
            "error: api: SIGNOFF_API_SESSION_SECRET: Value should have at least 32 items after validation, not 19",
        ),
        (
            "approval",
            {"SIGNOFF_DEFAULT_TIMEOUT": "banana"},
            "error: approval: SIGNOFF_DEFAULT_TIMEOUT: invalid duration",
        ),
        (
            "executor",
            {"SIGNOFF_DATABASE_POOL_MIN": "20", "SIGNOFF_DATABASE_POOL_MAX": "2"},
            "error: executor: SIGNOFF_DATABASE_POOL_MIN (20) is over SIGNOFF_DATABASE_POOL_MAX (2)",
        ),
        (
            "notifier",
            {"SIGNOFF_APPROVAL_PAGE_URL": "ftp://x"},
            "error: notifier: SIGNOFF_APPROVAL_PAGE_URL: String should match pattern",
        ),
        (
            "approval",
            {"SIGNOFF_DEFAULT_TIMEOUT": "40d", "SIGNOFF_MAX_TIMEOUT": "30d"},
            "error: approval: SIGNOFF_DEFAULT_TIMEOUT (40d) is over SIGNOFF_MAX_TIMEOUT (30d)",
        ),
        (
            "notifier",
            {"SIGNOFF_DELIVERY_BACKOFF_BASE_SECONDS": "100", "SIGNOFF_DELIVERY_BACKOFF_CAP_SECONDS": "1"},
            "error: notifier: SIGNOFF_DELIVERY_BACKOFF_CAP_SECONDS (1) is under SIGNOFF_DELIVERY_BACKOFF_BASE_SECONDS",
        ),
        (
            "executor",
            {"SIGNOFF_DATABASE_URL": ""},  # not "libpq's defaults": some other database than the one meant
            "error: executor: SIGNOFF_DATABASE_URL: not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)",
        ),
        (
            "approval",
            {"SIGNOFF_DECISION_KEYS": "{bad"},
            "error: approval did not start: ValueError: SIGNOFF_DECISION_KEYS",
        ),
        (
            "notifier",
            {"SIGNOFF_ROUTING_FILE": "/nonexistent/routing.yaml"},
            "error: notifier did not start: RoutingError: /nonexistent/routing.yaml: invalid routing (1 problem(s)): "
            "(root): cannot read the file",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(role: str, env: dict[str, str], expected: str, tmp_path) -> None:
    done = _start(role, tmp_path, **env)
    assert _error_line(done).startswith(expected)
    assert SECRET not in done.stderr + done.stdout


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path) -> None:
    url = f"postgresql://signoff:{SECRET}@127.0.0.1:{_closed_port()}/signoff"
    done = _start("executor", tmp_path, SIGNOFF_DATABASE_URL=url)
    assert _error_line(done).startswith("error: executor did not start: ConnectionRefusedError: ")
    assert SECRET not in done.stderr + done.stdout


def test_mask_password_masks_the_urls_password_quoted_or_not() -> None:
    url = "postgresql://dana:p%40ss@db.example.com/signoff"
    assert mask_password("failed for p%40ss and p@ss", url) == "failed for *** and ***"
    assert mask_password("nothing to hide", "postgresql://dana@db/signoff") == "nothing to hide"


def test_a_failure_after_the_role_started_says_it_stopped_not_that_it_did_not_start() -> None:
    settings = Settings()
    with pytest.raises(StartupError) as before, starting("executor", settings):
        raise ConnectionRefusedError("the database is gone")
    assert before.value.format_message() == "executor did not start: ConnectionRefusedError: the database is gone"
    with pytest.raises(StartupError) as after, starting("executor", settings):
        role_serving()
        raise ConnectionRefusedError("the database is gone")
    assert after.value.format_message() == "executor stopped: ConnectionRefusedError: the database is gone"
    with pytest.raises(StartupError) as again, starting("executor", settings):  # each run starts over
        raise ConnectionRefusedError("the database is gone")
    assert again.value.format_message().startswith("executor did not start: ")


def test_a_role_that_did_not_start_does_not_log_that_it_stopped(tmp_path) -> None:
    url = f"postgresql://signoff:{SECRET}@127.0.0.1:{_closed_port()}/signoff"
    done = _start("approval", tmp_path, SIGNOFF_DATABASE_URL=url, SIGNOFF_LOG_LEVEL="info")
    assert _error_line(done).startswith("error: approval did not start: ")
    assert "service_stopped" not in done.stderr + done.stdout
