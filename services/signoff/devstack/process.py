"""Child processes that cannot outlive their parent.

Every process the dev stack starts gets PR_SET_PDEATHSIG, so a SIGKILLed test run or `signoff dev up` leaves no
broker or postgres behind. The kernel clears that flag when the child changes its credentials, so it is set
*after* the switch to the unprivileged account (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from signoff.devstack.errors import DevStackError

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """A `preexec_fn`: the child gets `sig` (SIGKILL unless told) when `parent_pid` dies. Runs between fork and
    exec, after any uid/gid switch. Strictly the signal comes when the *thread* that forked ends, so fork from the
    thread that lives as long as the parent (the event loop's)."""
    if _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        os._exit(70)
    # The parent may have died before prctl took effect: then nobody would ever signal us.
    if os.getppid() != parent_pid:
        os._exit(70)


@dataclass(frozen=True)
class RunAs:
    """The account a child runs under; None fields mean 'the current one'."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None


def unprivileged_account() -> RunAs:
    """The account PostgreSQL runs as: the current one, or `postgres`/`nobody` when we are root."""
    if os.geteuid() != 0:
        return RunAs()
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=name)
    raise DevStackError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    run_as: RunAs = RunAs(),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (a Ctrl-C in the terminal reaches only us; we stop children in order),
    with stdout+stderr appended to `log_path`, dying with this process."""
    parent = os.getpid()
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(parent),
        )


def run_checked(
    argv: Sequence[str | os.PathLike[str]],
    *,
    run_as: RunAs = RunAs(),
    what: str,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a short command to completion as `run_as`; raise DevStackError with its last output line on failure.
    `env`: variables added to this process's environment for it (a password: never in `argv`, which `ps` shows)."""
    parent = os.getpid()
    try:
        done = subprocess.run(
            [os.fspath(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env else None,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
            preexec_fn=lambda: die_with_parent(parent),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevStackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
        raise DevStackError(f"{what} failed: {lines[-1]}")
    return done.stdout


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Ask a child to stop with `sig`; kill it if it has not exited after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries if somebody takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str, host: str = "127.0.0.1") -> None:
    """Refuse a requested port that something else already listens on, in one line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: connections of the previous run left in TIME_WAIT do not make the port
        # busy (a server restarted on its own port must start), a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            raise DevStackError(f"{what} port {host}:{port} is not available ({exc.strerror})") from exc


def wait_until(predicate, *, timeout: float, what: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll `predicate` until it is true; fail fast (with the child's last log line) if the child exits."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if proc.poll() is not None:
            raise DevStackError(f"{what} exited with code {proc.returncode}: {last_line(log_path)}")
        if predicate():
            return
        if time.monotonic() > deadline:
            raise DevStackError(f"{what} was not ready after {timeout:.0f}s: {last_line(log_path)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_for(predicate, *, timeout: float, what: str) -> None:
    """Poll `predicate` until it is true or `timeout` seconds pass (then DevStackError)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DevStackError(f"{what} was not ready after {timeout:.0f}s")
        time.sleep(0.2)


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


def reachable_by(path: Path, run_as: RunAs) -> bool:
    """Whether `run_as` can traverse every parent of `path` (a 0700 /root in the way breaks PostgreSQL)."""
    if run_as.uid is None:
        return True
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == run_as.uid:
            continue
        if st.st_gid == run_as.gid and st.st_mode & 0o010:
            continue
        if not st.st_mode & 0o001:
            return False
    return True
