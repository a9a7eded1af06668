"""`signoff dev up|down|env|token`: the whole system on the embedded broker and PostgreSQL, for a laptop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families

from signoff.cli.access_keys import dev_access_key
from signoff.cli.errors import CliError
from signoff.cli.roles import ROLES
from signoff.cli.tokens import dev_token
from signoff.devstack import DevStack, DevStackError
from signoff.devstack.process import die_with_parent, free_port
from signoff.devstack.stack import KEYS_FILE, default_state_dir
from signoff.runtime.devenv import ENV_FILE, PID_FILE, read_env_file, supervisor_pid
from signoff.runtime.startup import mask_password

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
@click.option("--api-port", type=click.IntRange(1, 65535), default=None, help="The api's port [default: a free one].")
@click.option("--detach", is_flag=True, help="Run in the background; stop it with `signoff dev down`.")
@_state_dir_option
def up(
    kafka_port: int | None, postgres_port: int | None, api_port: int | None, detach: bool, state_dir: Path | None
) -> None:
    """Start the broker, PostgreSQL and every service role, in the foreground (Ctrl-C stops all)."""
    state_dir = (state_dir or default_state_dir()).absolute()
    if (pid := supervisor_pid(state_dir)) is not None:
        raise CliError(f"a dev stack is already running from {state_dir} (pid {pid}); `signoff dev down` stops it")
    if detach:
        _detach(state_dir, kafka_port, postgres_port, api_port)
        return
    Supervisor(state_dir, kafka_port, postgres_port, api_port).run()


@dev.command()
@_state_dir_option
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for a clean stop, then kill it [default: long enough for the longest drain].",
)
@click.option(
    "--purge", is_flag=True, help="Then delete the stack's data: the state dir and PostgreSQL's files kept elsewhere."
)
def down(state_dir: Path | None, timeout: float | None, purge: bool) -> None:
    """Stop a dev stack started with `signoff dev up --detach`: the roles upstream first, each downstream one once
    it has consumed what is on its topics (the broker keeps nothing), then the broker and PostgreSQL."""
    state_dir = (state_dir or default_state_dir()).absolute()
    pid = supervisor_pid(state_dir)
    if pid is None:
        click.echo(f"no dev stack is running from {state_dir}")
    else:
        _stop_supervisor(state_dir, pid, STOP_TIMEOUT_SECONDS if timeout is None else timeout)
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


def _detach(state_dir: Path, kafka_port: int | None, postgres_port: int | None, api_port: int | None) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "dev-up.log"
    argv = [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(state_dir)]
    if kafka_port:
        argv += ["--kafka-port", str(kafka_port)]
    if postgres_port:
        argv += ["--postgres-port", str(postgres_port)]
    if api_port:
        argv += ["--api-port", str(api_port)]
    # One earlier run's log is kept (dev-up.log.1): the file never grows across runs.
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with open(log_path, "wb") as log:
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
    # The database URL's password is masked: this output ends up in CI logs and terminals' scrollback; the env file
    # (owner-only) and `dev env` have it.
    shown = (state_dir / ENV_FILE).read_text()
    dsn = read_env_file(state_dir / ENV_FILE).get("SIGNOFF_DATABASE_URL", "")
    click.echo(mask_password(shown, dsn), nl=False)
    click.echo('# the database password is masked above: eval "$(signoff dev env)" sets the variables')
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


SCRAPE_TARGETS_FILE = "prometheus-targets.json"
"""In the state dir: every role's /metrics address while the stack runs."""
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_CAP = 30.0
TERMINATE_GRACE_SECONDS = 30.0
"""A role asked to stop so it can be restarted (onto a new broker) is killed after this long."""
STABLE_AFTER_SECONDS = 60.0
"""A role that ran this long before it exited is restarted after the shortest wait again."""
ROLE_EXIT_SECONDS = 20.0
"""At the stack's stop, a role SIGTERMed is killed when it has not exited after this long."""
STOP_ORDER: tuple[str, ...] = ("api", "executor", "approval", "notifier")
"""The order the roles stop in at the stack's stop: the front door first, then upstream before downstream."""
DRAIN_SECONDS = 20.0
"""At the stack's stop, how long the roles still running get to consume what is on their topics before the next one
is stopped anyway (the broker keeps nothing across a restart: what nobody consumed before it stops is lost)."""
QUIET_SECONDS = 1.5
"""A role is quiet once its lag is 0 and it has consumed nothing for this long (its lag gauge is only updated after
each batch: an unchanged consumed count is what says no batch is running)."""
DRAIN_POLL_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = len(STOP_ORDER) * ROLE_EXIT_SECONDS + (len(STOP_ORDER) - 1) * DRAIN_SECONDS + 60.0
"""`dev down` kills the supervisor after this long: every role's stop and drain at their longest, and the rest."""
LAG_METRIC = "signoff_consumer_lag_records"
CONSUMED_METRIC = "signoff_events_consumed_total"


@dataclass
class _Role:
    """One supervised role process and its restart schedule."""

    name: str
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None  # copies its output, line by line
    last_line: str = ""  # the last it printed: why it failed, when it did
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_FIRST
    restart_at: float | None = None
    terminating_since: float | None = None  # asked to stop (SIGTERM) to be restarted
    health_port: int = field(default_factory=free_port)  # /readyz: `dev up` is ready once every role is


class Supervisor:
    """Runs the dev stack and the service roles (every one in ROLES) in the foreground, multiplexing their output
    line by line with a `role |` prefix. A role that exits is restarted with bounded exponential backoff and the
    restart printed; the broker and PostgreSQL keep running (and are started again on their own ports if they
    die). Everything stops only on SIGINT / SIGTERM (Ctrl-C, `signoff dev down`)."""

    def __init__(
        self, state_dir: Path, kafka_port: int | None, postgres_port: int | None, api_port: int | None = None
    ) -> None:
        self.state_dir = state_dir
        self.stack = DevStack(state_dir, kafka_port=kafka_port, postgres_port=postgres_port, api_port=api_port)
        self.roles: dict[str, _Role] = {name: _Role(name) for name in ROLES}
        self._infra_retry_at: dict[str, float] = {}  # broker / postgres -> when to try starting it again
        self.stopping = threading.Event()
        # A second Ctrl-C / SIGTERM: stop at once, without draining. A plain flag: a signal handler that takes the
        # lock of an Event the main thread is waiting on would deadlock.
        self.hurry = False
        self.ready = False  # every role answered /readyz: from then on the stop drains the topics
        self.print_lock = threading.Lock()

    def say(self, prefix: str, line: str) -> None:
        with self.print_lock:
            click.echo(f"{prefix:<9}| {line}")

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        try:
            kept_data = (self.stack.postgres.datadir / "PG_VERSION").exists()
            try:
                self.stack.start()
            except DevStackError as exc:
                raise CliError(str(exc)) from exc
            broker, postgres = self.stack.broker, self.stack.postgres
            self.say("dev", f"broker     {broker.bootstrap}  (pid {broker.proc.pid}, log {broker.log_path})")
            # Without the password: this line goes to dev-up.log too (`dev env` and the env file, owner-only, have it).
            where = postgres.dsn("signoff", with_password=False)
            self.say("dev", f"postgres   {where}  (pid {postgres.proc.pid}, log {postgres.log_path})")
            self.say("dev", f"api        {self.stack.api_url}")
            self.say("dev", f"pages      {self.stack.api_url}/  (approval pages; sign in as any directory user)")
            if postgres.relocated:
                self.say(
                    "dev",
                    f"postgres   data in {postgres.home}: its account '{postgres.run_as.name}' cannot reach "
                    f"{self.state_dir}",
                )
            if kept_data:
                self._say_broker_empty("PostgreSQL keeps the data of the last run")
            for role in self.roles.values():
                self._start_role(role)
            # The env file is what `dev up --detach` and other commands wait for: write it once every role
            # answers /readyz, so the first command after `dev up` finds the API listening.
            self._wait_until_ready()
            self.ready = True
            self._write_scrape_targets()
            self.stack.write_env_file()
            # A stack of another folder than the default one is found by a shell that evaluated its `dev env`.
            find = (
                ""
                if self.state_dir.absolute() == default_state_dir().absolute()
                else f'eval "$(./signoffw dev env --state-dir {self.state_dir})"; '
            )
            self.say(
                "dev",
                f"ready: roles {', '.join(self.roles)}; the API is at {self.stack.api_url}; in another terminal: "
                f"{find}export SIGNOFF_TOKEN=$(./signoffw dev token alice); Ctrl-C stops everything",
            )
            while not self.stopping.wait(0.2):
                self._supervise()
        finally:
            self._stop_roles()
            self.stack.stop()
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / PID_FILE).unlink()
            self.say("dev", "stopped")

    def _on_signal(self, *_: object) -> None:
        if self.stopping.is_set():
            self.hurry = True  # the second one: skip the drain
        else:
            self.stopping.set()

    def _say_broker_empty(self, why: str) -> None:
        self.say(
            "dev",
            f"the broker starts empty (in-memory storage) while {why}: topics and offsets start again at 0 "
            "(consumers dedupe by event id and dead letters by record content, so reused offsets are safe); "
            "`dev down` lets every role consume what is on its topics first (at most "
            f"{DRAIN_SECONDS:.0f}s per role), but a broker that dies on its own loses what nobody consumed yet",
        )

    def _supervise(self) -> None:
        """One round: bring back dead infrastructure on its own port, then schedule and perform role restarts."""
        now = time.monotonic()
        for name, part in (("postgres", self.stack.postgres), ("broker", self.stack.broker)):
            if name not in self._infra_retry_at:
                if part.proc is None or part.proc.poll() is None:
                    continue
                self.say("dev", f"{name} exited with code {part.proc.returncode}; starting it again on {part.port}")
                self._infra_retry_at[name] = now
            if now < self._infra_retry_at[name]:
                continue
            if not self._restart_infrastructure(part):
                self._infra_retry_at[name] = now + RESTART_BACKOFF_FIRST
                continue
            del self._infra_retry_at[name]
            if name == "broker":
                self._say_broker_empty("PostgreSQL keeps its data")
                # The roles create their topics at start: restart them onto the empty broker.
                for role in self.roles.values():
                    self._terminate(role)
        for role in self.roles.values():
            overdue = role.terminating_since is not None and now - role.terminating_since > TERMINATE_GRACE_SECONDS
            if overdue and role.proc is not None and role.proc.poll() is None:
                self.say("dev", f"role {role.name} did not stop within {TERMINATE_GRACE_SECONDS:.0f}s; killing it")
                role.proc.kill()
                role.terminating_since = None
            if role.proc is None or role.proc.poll() is None:
                if role.restart_at is not None and now >= role.restart_at:
                    role.restart_at = None
                    self._start_role(role)
                continue
            if role.restart_at is None:
                if now - role.started_at >= STABLE_AFTER_SECONDS:
                    role.backoff = RESTART_BACKOFF_FIRST
                role.restarts += 1
                role.restart_at = now + role.backoff
                self.say(
                    "dev",
                    f"role {role.name} exited with code {role.proc.returncode}; restart #{role.restarts} "
                    f"in {role.backoff:.0f}s",
                )
                role.backoff = min(role.backoff * 2, RESTART_BACKOFF_CAP)
            elif now >= role.restart_at:
                role.restart_at = None
                self._start_role(role)

    def _restart_infrastructure(self, part) -> bool:
        """Start the broker or PostgreSQL again on the port it had, so the roles' settings stay true."""
        part.requested_port = part.port
        part.proc = None
        try:
            part.start()
        except DevStackError as exc:
            self.say("dev", f"could not start it again: {exc}; retrying")
            return False
        self.say("dev", f"started again (pid {part.proc.pid})")
        return True

    def _start_role(self, role: _Role) -> None:
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
                "SIGNOFF_HTTP_PORT": str(role.health_port),
                # Static membership: a restarted role takes its partitions back without waiting for the session
                # of the process it replaces to time out.
                "SIGNOFF_KAFKA_GROUP_INSTANCE_ID": f"dev-{role.name}",
            }
        )

        parent = os.getpid()
        proc = subprocess.Popen(
            [sys.executable, "-m", "signoff", role.name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(parent),
        )
        role.proc, role.started_at, role.terminating_since = proc, time.monotonic(), None
        self.say("dev", f"role {role.name} {'restarted' if role.restarts else 'started'} (pid {proc.pid})")
        role.last_line = ""
        role.pump = threading.Thread(target=self._pump, args=(role, proc), daemon=True)
        role.pump.start()

    def _write_scrape_targets(self) -> None:
        """Every role's /metrics address, as a Prometheus `file_sd_configs` file (a local Prometheus, or a test, scrapes
        the dev stack with it): one target per role, labelled `role`."""
        targets = [
            {"targets": [f"127.0.0.1:{role.health_port}"], "labels": {"role": role.name}}
            for role in self.roles.values()
        ]
        path = self.state_dir / SCRAPE_TARGETS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets, indent=2) + "\n")
        tmp.replace(path)
        self.say("dev", f"metrics    {path} (Prometheus file_sd targets of every role's /metrics)")

    def _wait_until_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until every role's /readyz answers 200; CliError when a role exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        waiting = {role.name: role.health_port for role in self.roles.values()}
        while waiting:
            for role, port in list(waiting.items()):
                proc = self.roles[role].proc
                if proc is not None and proc.poll() is not None:
                    raise CliError(self._start_failure(self.roles[role]))
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

    @staticmethod
    def _start_failure(role: _Role) -> str:
        """`role exited while starting`, with the last line it printed (its `error: …`, usually)."""
        assert role.proc is not None
        if role.pump is not None:
            role.pump.join(timeout=2)  # it has exited: what it printed last is on its way
        said = f": {role.last_line.removeprefix('error: ')[:300]}" if role.last_line else ""
        return f"role {role.name} exited with code {role.proc.returncode} while starting{said}"

    def _pump(self, role: _Role, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip()
            self.say(role.name, text)
            if text.strip():
                role.last_line = text.strip()

    def _terminate(self, role: _Role) -> None:
        if role.proc is not None and role.proc.poll() is None:
            role.proc.send_signal(signal.SIGTERM)
            role.terminating_since = time.monotonic()

    def _stop_roles(self) -> None:
        """Upstream first: the api (no new requests or decisions), then executor, approval, notifier, each once the
        roles still running have consumed what is on their topics (a role's own stop publishes its outbox, which the
        next one then catches up on), at most DRAIN_SECONDS per step. A second signal, or a stack that never got
        ready, stops every role at once."""
        for role in self.roles.values():
            role.restart_at = None
        order = [self.roles[name] for name in STOP_ORDER if name in self.roles]
        order += [role for name, role in self.roles.items() if name not in STOP_ORDER]
        if self.ready and not self.hurry:
            for index, role in enumerate(order):
                if index:
                    self._drain(order[index:])
                if self.hurry:
                    break
                if self._running(role):
                    self.say("dev", f"stopping {role.name}")
                self._stop_role(role)
        if any(self._running(role) for role in order):
            self.say("dev", f"stopping {', '.join(role.name for role in order if self._running(role))}")
        for role in order:
            self._terminate(role)
        for role in order:
            self._stop_role(role)

    @staticmethod
    def _running(role: _Role) -> bool:
        return role.proc is not None and role.proc.poll() is None

    def _stop_role(self, role: _Role) -> None:
        """SIGTERM `role` and wait until it exits, killing it after ROLE_EXIT_SECONDS."""
        if role.proc is None:
            return
        self._terminate(role)
        try:
            role.proc.wait(timeout=ROLE_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.say("dev", f"role {role.name} did not stop within {ROLE_EXIT_SECONDS:.0f}s; killing it")
            role.proc.kill()
            role.proc.wait()

    def _drain(self, roles: list[_Role]) -> None:
        """Until every running role of `roles` is quiet (its /metrics: lag 0 and nothing consumed for QUIET_SECONDS),
        DRAIN_SECONDS pass (said, naming who was not quiet) or a second signal comes."""
        running = [role for role in roles if self._running(role)]
        if not running or self.hurry:
            return
        self.say("dev", f"waiting for {', '.join(role.name for role in running)} to catch up…")
        start = time.monotonic()
        seen: dict[str, tuple[float, float]] = {}  # role -> (consumed count, since when)
        while True:
            now = time.monotonic()
            busy = []
            for role in running:
                if not self._running(role):
                    continue  # it exited: nothing to wait for (it is not restarted while the stack stops)
                reading = _consumer_progress(role.health_port)
                if reading is None:
                    busy.append(f"{role.name} (no /metrics)")
                    continue
                lag, consumed = reading
                if role.name not in seen or seen[role.name][0] != consumed:
                    seen[role.name] = (consumed, now if role.name in seen else start)
                if lag > 0:
                    busy.append(f"{role.name} (lag {lag:.0f})")
                elif now - seen[role.name][1] < QUIET_SECONDS:
                    busy.append(f"{role.name} (consuming)")
            if not busy:
                return
            if now - start >= DRAIN_SECONDS:
                self.say("dev", f"not quiet after {DRAIN_SECONDS:.0f}s, stopping anyway: {', '.join(busy)}")
                return
            time.sleep(DRAIN_POLL_SECONDS)  # polling /metrics: there is no event to wait on
            if self.hurry:
                self.say("dev", "stopping at once (second signal): the drain is skipped")
                return


def _consumer_progress(port: int) -> tuple[float, float] | None:
    """A role's consumer lag (records, every partition) and the records it consumed so far, from its /metrics;
    None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except (OSError, ValueError):
        return None
    lag = consumed = 0.0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAG_METRIC:
                    lag += sample.value
                elif sample.name == CONSUMED_METRIC:
                    consumed += sample.value
    except ValueError:
        return None
    return lag, consumed
