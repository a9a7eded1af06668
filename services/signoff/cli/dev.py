"""`signoff dev up|down|env|token`: the whole system on the embedded broker and PostgreSQL, for a laptop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click

from signoff.cli.access_keys import dev_access_key
from signoff.cli.errors import CliError
from signoff.cli.roles import ROLES
from signoff.cli.tokens import dev_token
from signoff.devstack import DevStack, DevStackError
from signoff.devstack.process import die_with_parent, free_port
from signoff.devstack.stack import (
    ENV_FILE,
    KEYS_FILE,
    PID_FILE,
    default_state_dir,
    read_env_file,
    supervisor_pid,
)

READY_TIMEOUT_SECONDS = 120.0


@click.group()
def dev() -> None:
    """Run signoff locally on an embedded broker and PostgreSQL."""


def _state_dir_option(func):
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the dev stack keeps data and logs [default: $SIGNOFF_HOME/dev or ./.signoff/dev].",
    )(func)


@dev.command()
@click.option("--kafka-port", type=click.IntRange(1, 65535), default=None, help="Broker port [default: a free one].")
@click.option("--postgres-port", type=click.IntRange(1, 65535), default=None, help="PostgreSQL port [default: free].")
@click.option("--detach", is_flag=True, help="Run in the background; stop it with `signoff dev down`.")
@_state_dir_option
def up(kafka_port: int | None, postgres_port: int | None, detach: bool, state_dir: Path | None) -> None:
    """Start the broker, PostgreSQL and every service role, in the foreground (Ctrl-C stops all)."""
    state_dir = (state_dir or default_state_dir()).absolute()
    if (pid := supervisor_pid(state_dir)) is not None:
        raise CliError(f"a dev stack is already running from {state_dir} (pid {pid}); `signoff dev down` stops it")
    if detach:
        _detach(state_dir, kafka_port, postgres_port)
        return
    Supervisor(state_dir, kafka_port, postgres_port).run()


@dev.command()
@_state_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for a clean stop.")
@click.option(
    "--purge", is_flag=True, help="Then delete the stack's data: the state dir and PostgreSQL's files kept elsewhere."
)
def down(state_dir: Path | None, timeout: float, purge: bool) -> None:
    """Stop a dev stack started with `signoff dev up --detach`."""
    state_dir = (state_dir or default_state_dir()).absolute()
    pid = supervisor_pid(state_dir)
    if pid is None:
        click.echo(f"no dev stack is running from {state_dir}")
    else:
        _stop_supervisor(state_dir, pid, timeout)
    if purge:
        if state_dir.exists() and not any((state_dir / name).exists() for name in ("postgres", "broker", KEYS_FILE)):
            raise CliError(f"{state_dir} does not look like a dev stack's folder; nothing deleted")
        DevStack(state_dir).remove()
        click.echo(f"dev stack data removed from {state_dir}")


def _stop_supervisor(state_dir: Path, pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisor_pid(state_dir) is not None and _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
            raise CliError(f"the dev stack (pid {pid}) did not stop within {timeout:.0f}s and was killed")
        time.sleep(0.1)
    click.echo("dev stack stopped")


dev.add_command(dev_token)
dev.add_command(dev_access_key)


@dev.command()
@_state_dir_option
def env(state_dir: Path | None) -> None:
    """Print the settings of the running dev stack as `export` lines (eval "$(signoff dev env)")."""
    state_dir = (state_dir or default_state_dir()).absolute()
    if supervisor_pid(state_dir) is None or not (state_dir / ENV_FILE).is_file():
        raise CliError(f"no dev stack is running from {state_dir}; start one with `signoff dev up --detach`")
    click.echo((state_dir / ENV_FILE).read_text(), nl=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _detach(state_dir: Path, kafka_port: int | None, postgres_port: int | None) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "dev-up.log"
    argv = [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(state_dir)]
    if kafka_port:
        argv += ["--kafka-port", str(kafka_port)]
    if postgres_port:
        argv += ["--postgres-port", str(postgres_port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while not (state_dir / ENV_FILE).is_file() or supervisor_pid(state_dir) != proc.pid:
        if proc.poll() is not None:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            raise CliError(lines[-1].removeprefix("error: ") if lines else "the dev stack failed to start")
        if time.monotonic() > deadline:
            proc.kill()
            raise CliError(f"the dev stack did not start within 180s; see {log_path}")
        time.sleep(0.1)
    click.echo(f"dev stack running (pid {proc.pid}); logs in {log_path}; stop it with `signoff dev down`")
    # The env file holds no secret (the api's decision key stays with the roles), so it can be shown as it is.
    click.echo((state_dir / ENV_FILE).read_text(), nl=False)
    pages = read_env_file(state_dir / ENV_FILE).get("SIGNOFF_API_URL")
    if pages:
        click.echo(f"# approval pages: {pages}/ (sign in as any directory user)")


def _example_env(variable: str, example: str) -> dict[str, str]:
    """`variable` -> the repository's examples/`example` when it exists and the variable is not set: the dev
    stack's directory of user groups (approval role) and catalog (executor and notifier)."""
    if os.environ.get(variable):
        return {}
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = root / "examples" / example
        if candidate.is_file():
            return {variable: str(candidate)}
    return {}


class Supervisor:
    """Runs the dev stack and the service roles in the foreground, multiplexing their output line by line
    with a `role |` prefix, and stops everything on SIGINT / SIGTERM or when a role dies."""

    def __init__(self, state_dir: Path, kafka_port: int | None, postgres_port: int | None) -> None:
        self.state_dir = state_dir
        self.stack = DevStack(state_dir, kafka_port=kafka_port, postgres_port=postgres_port)
        self.roles: dict[str, subprocess.Popen[bytes]] = {}
        self.health_ports: dict[str, int] = {}
        self.stopping = threading.Event()
        self.print_lock = threading.Lock()

    def say(self, prefix: str, line: str) -> None:
        with self.print_lock:
            click.echo(f"{prefix:<9}| {line}")

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        exit_code = 0
        try:
            try:
                self.stack.start()
            except DevStackError as exc:
                raise CliError(str(exc)) from exc
            self.say("dev", f"broker     {self.stack.broker.bootstrap}  (log {self.stack.broker.log_path})")
            self.say("dev", f"postgres   {self.stack.postgres.dsn('signoff')}  (log {self.stack.postgres.log_path})")
            self.say("dev", f"api        {self.stack.api_url}")
            self.say("dev", f"pages      {self.stack.api_url}/  (approval pages; sign in as any directory user)")
            if self.stack.postgres.relocated:
                self.say(
                    "dev",
                    f"postgres   data in {self.stack.postgres.home}: its account "
                    f"'{self.stack.postgres.run_as.name}' cannot reach {self.state_dir}",
                )
            for role in ROLES:
                self._start_role(role)
            # The env file is what `dev up --detach` and other commands wait for: write it once every role
            # answers /readyz, so the first command after `dev up` finds the API listening.
            self._wait_until_ready()
            self.stack.write_env_file()
            self.say(
                "dev",
                f"ready: roles {', '.join(ROLES)}; the API is at {self.stack.api_url}; in another terminal: "
                'eval "$(./signoffw dev env)"; export SIGNOFF_TOKEN=$(./signoffw dev token alice); '
                "Ctrl-C stops everything",
            )
            while not self.stopping.wait(0.2):
                for role, proc in self.roles.items():
                    if proc.poll() is not None:
                        self.say("dev", f"role {role} exited with code {proc.returncode}; stopping")
                        exit_code = 1
                        self.stopping.set()
        finally:
            self.say("dev", "stopping")
            self._stop_roles()
            self.stack.stop()
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / PID_FILE).unlink()
            self.say("dev", "stopped")
        if exit_code:
            raise SystemExit(exit_code)

    def _start_role(self, role: str) -> None:
        env = (
            os.environ
            | self.stack.env
            | self.stack.role_env
            | _example_env("SIGNOFF_DIRECTORY_FILE", "directory.yaml")
            | _example_env("SIGNOFF_CATALOG_FILE", "catalog.yaml")
            # Health endpoints on loopback and any free port: several roles share one machine.
            | {
                "SIGNOFF_LOG_FORMAT": os.environ.get("SIGNOFF_LOG_FORMAT", "console"),
                "SIGNOFF_HTTP_HOST": "127.0.0.1",
                "SIGNOFF_HTTP_PORT": str(self.health_ports.setdefault(role, free_port())),
            }
        )

        parent = os.getpid()
        proc = subprocess.Popen(
            [sys.executable, "-m", "signoff", role],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(parent),
        )
        self.roles[role] = proc
        threading.Thread(target=self._pump, args=(role, proc), daemon=True).start()

    def _wait_until_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until every role's /readyz answers 200; CliError when a role exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        waiting = dict(self.health_ports)
        while waiting:
            for role, port in list(waiting.items()):
                if self.roles[role].poll() is not None:
                    raise CliError(f"role {role} exited with code {self.roles[role].returncode} while starting")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                        if answer.status == 200:
                            del waiting[role]
                except OSError:
                    pass  # not listening or not ready yet
            if self.stopping.is_set():
                raise CliError("stopped while starting")
            if waiting and time.monotonic() > deadline:
                raise CliError(f"roles {', '.join(waiting)} not ready after {timeout:.0f}s")
            if waiting:
                time.sleep(0.2)  # polling readiness endpoints: there is no event to wait on

    def _pump(self, role: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.say(role, raw.decode(errors="replace").rstrip())

    def _stop_roles(self) -> None:
        for proc in self.roles.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.roles.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
