"""`signoff dev up` makes decisions work out of the box: the api role signs with the stack's own key (which no
client ever holds), the approval role verifies it, the example directory is loaded before the stack reports ready,
and `signoff dev token` gives a directory user a token to decide with."""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from signoff import contracts as wire
from signoff.approval.service import REQUESTS_TOPIC
from signoff.devstack.process import free_port
from signoff.devstack.stack import KEYS_FILE
from signoff.runtime.devenv import ENV_FILE, read_env_file
from signoff.runtime.kafka import make_producer
from signoff.runtime.settings import Settings
from tests.integration.approval.conftest import request
from tests.support.devcli import run_signoff, shell_env
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.integration


async def test_dev_up_lets_a_directory_user_approve_with_a_dev_token_through_the_api() -> None:
    home = Path(tempfile.mkdtemp(prefix="signoff-devcli-"))  # private: as root, PostgreSQL's files go elsewhere
    state = home / "dev"
    # Only what an approver's shell has: the dev stack's env file gives the API's URL, `dev token` the token.
    env = shell_env(home)
    api_port = free_port()  # chosen by the caller, and the decisions below go through it
    up = run_signoff("dev", "up", "--detach", "--state-dir", str(state), "--api-port", str(api_port), env=env)
    assert up.returncode == 0, up.stderr
    try:
        stack_env = read_env_file(state / ENV_FILE)
        # What it printed (a CI log, a terminal's scrollback) does not hold the database password; `dev env` does.
        password = stack_env["SIGNOFF_DATABASE_URL"].split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in up.stdout and ":***@" in up.stdout
        assert password in run_signoff("dev", "env", "--state-dir", str(state), env=env).stdout
        keys = json.loads((state / KEYS_FILE).read_text())
        assert len(keys["api"]) >= 32 and keys["api"] not in (state / ENV_FILE).read_text()
        assert stack_env["SIGNOFF_API_URL"] == f"http://127.0.0.1:{api_port}"

        # The stack reported ready with its directory loaded: a token for dana at once, none for a stranger.
        token = run_signoff("dev", "token", "dana", env=env)
        assert token.returncode == 0, token.stderr
        env["SIGNOFF_TOKEN"] = token.stdout.strip()
        stranger = run_signoff("dev", "token", "mallory", env=env)
        assert stranger.returncode == 1 and "not in the dev stack's directory" in stranger.stderr
        # A shell that evaluated `dev env` (no SIGNOFF_HOME) finds the stack from any folder.
        evaluated = {k: v for k, v in env.items() if k != "SIGNOFF_HOME"} | stack_env
        assert stack_env["SIGNOFF_DEV_STATE_DIR"] == str(state)
        elsewhere = run_signoff("dev", "token", "eli", env=evaluated, cwd=tempfile.gettempdir())
        assert elsewhere.returncode == 0 and elsewhere.stdout.strip(), elsewhere.stderr

        req = request(pipeline=f"dev_{uuid.uuid4().hex[:8]}", groups=("docs",), timeout="1d")
        settings = Settings(
            kafka_bootstrap=stack_env["SIGNOFF_KAFKA_BOOTSTRAP"],
            kafka_enable_idempotence=False,
            database_url=stack_env["SIGNOFF_DATABASE_URL"],
        )
        producer = make_producer(settings, "test-producer")
        await producer.start()
        try:
            event = wire.new_event(req, source="urn:signoff:test")
            value, headers = wire.encode(event)
            await producer.send_and_wait(REQUESTS_TOPIC, value, key=wire.message_key(event), headers=headers)
        finally:
            await producer.stop()

        def pending_gate():
            listed = run_signoff("pending", "--group", "docs", "--json", env=env)
            assert listed.returncode == 0, listed.stderr
            return next((g for g in json.loads(listed.stdout) if g["pipeline_id"] == req.key.pipeline_id), None)

        gate = eventually_sync(pending_gate, timeout=60, what="the gate in `signoff pending`")
        approved = run_signoff("approve", gate["gate_id"], "--comment", "lgtm", env=env)
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith(f"vote counted: dana approved gate {gate['gate_id']}; 1 of 1 approver")
        assert approved.stdout.rstrip().endswith("gate is now approved")
    finally:
        down = run_signoff("dev", "down", "--purge", "--state-dir", str(state), env=env)
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def test_a_busy_api_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """As the broker's and PostgreSQL's: one line naming the port, and no broker, database or role was started."""
    env = shell_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        up = run_signoff(
            "dev", "up", "--detach", "--api-port", str(port), "--state-dir", str(tmp_path / "dev"), env=env
        )
    assert up.returncode == 1, up.stdout + up.stderr
    assert up.stderr.strip().splitlines()[-1] == (
        f"error: api port 127.0.0.1:{port} is not available (Address already in use)"
    )
    assert not (tmp_path / "dev" / "postgres").exists()


def test_a_role_that_cannot_start_is_named_with_its_reason(tmp_path: Path) -> None:
    env = shell_env(tmp_path) | {"SIGNOFF_LOG_LEVEL": "loud"}  # every role refuses it at start
    state = tmp_path / "dev"
    try:
        up = run_signoff("dev", "up", "--detach", "--state-dir", str(state), env=env)
        assert up.returncode == 1, up.stdout + up.stderr
        last = up.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            r"error: role (approval|executor|notifier|api) exited with code 1 while starting: "
            r"(approval|executor|notifier|api): SIGNOFF_LOG_LEVEL: .*",
            last,
        ), last
    finally:
        run_signoff("dev", "down", "--purge", "--state-dir", str(state), env=env)
