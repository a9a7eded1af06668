"""The script runner (`signoff script-runner`): ShellScript steps run away from the executor's keys.

A script runs as the user that spawns it. Spawned by the executor, it could read what the executor can: its
mounted keys (the database URL, the Kafka password) and its own environment through /proc. So it could act as the
executor. With SIGNOFF_SCRIPT_RUNNER_SOCKET set, the executor spawns nothing. It sends each script to this runner
over a Unix socket, and the runner runs it with `run_script`, exactly as the executor would. In Kubernetes the
runner is a sidecar container of the executor's pod (deploy/base/executor): another uid, no secret mounted, no
view of the executor's processes. The socket is all the two containers share.

The protocol is one connection per script, each message one JSON line:
- the executor writes the step's RunShellScript;
- the runner answers `{"started": ScriptProcess}` once the process runs, and `{"result": ScriptResult}` at its end.

The executor hanging up (a cancel, or its death) kills the script's process group. The runner's death kills its
scripts too (the guard's parent-death signal, scripts.py), and the executor reads it as the connection's end.

What this does not separate: the scripts of all executions share the runner's uid, as they shared the executor's.
A script can see the others that run at the same time, as before; it cannot see the executor's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import structlog
from pydantic import ValidationError

from signoff.executor.domain.actions import RunShellScript
from signoff.executor.scripts import ScriptProcess, ScriptResult, run_script
from signoff.runtime.logging import configure_logging
from signoff.runtime.startup import StartupError

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The longest line either end reads: a step's script and variables, or a result's outputs and output tail."""

RUNNER_HOST_SUFFIX = "/script-runner"
"""Marks a ScriptProcess as the runner's. Its pid is in the runner's process namespace, never to be looked up or
killed by the executor (`ensure_gone` leaves another host's process alone). Hanging up kills it instead."""

RUNNER_LOST = "the script runner stopped while the script ran"


class ScriptRunnerUnavailable(ConnectionError):
    """No script runner answered at the socket within the connect timeout."""


class ScriptRunnerClient:
    """The executor's end: runs a step's script in the runner at `socket_path`, with `run_script`'s signature."""

    def __init__(self, socket_path: Path, *, connect_timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout

    async def __call__(
        self,
        action: RunShellScript,
        *,
        on_started: Callable[[ScriptProcess], Awaitable[None]] | None = None,
    ) -> ScriptResult:
        """Run `action`'s script in the runner and return how it ended. Cancelling the call hangs up, which kills
        the script. The runner stopping meanwhile is a failed script (RUNNER_LOST), not an error."""
        reader, writer = await self._connect()
        try:
            writer.write(action.model_dump_json().encode() + b"\n")
            await writer.drain()
            while line := await reader.readline():
                reply = json.loads(line)
                if "started" in reply:
                    if on_started is not None:
                        await on_started(ScriptProcess(**reply["started"]))
                elif "result" in reply:
                    return ScriptResult(**reply["result"])
            return ScriptResult(exit_code=None, error=RUNNER_LOST)
        except (ConnectionError, asyncio.IncompleteReadError):
            return ScriptResult(exit_code=None, error=RUNNER_LOST)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def probe(self) -> None:
        """Make sure a runner answers (ScriptRunnerUnavailable otherwise): the executor checks before it serves."""
        _, writer = await self._connect()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect, waiting up to `connect_timeout` for a runner that is (re)starting."""
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                return await asyncio.open_unix_connection(str(self.socket_path), limit=MAX_MESSAGE_BYTES)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() + delay > deadline:
                    raise ScriptRunnerUnavailable(
                        f"no script runner answers at {self.socket_path} ({type(exc).__name__})"
                    ) from None
                await asyncio.sleep(delay)  # backing off while the runner starts
                delay = min(delay * 2, 1.0)


class SocketReplaced(Exception):
    """The runner's socket path no longer names its socket: something removed or replaced it."""


WATCH_SECONDS = 0.2
"""How often the runner makes sure its socket path still names its own socket."""


class ScriptRunnerServer:
    """The runner's end: serves scripts on a Unix socket until stopped.

    The scripts run as the runner's uid, so one could remove the socket and listen at its path instead, to read and
    answer the scripts sent after it. Two things stand against that: the runner serves only `client_uid` (the
    executor's; a script cannot even connect, let alone relay to it), and it watches its path: when that no longer
    names its socket, it stops at once with SocketReplaced. In Kubernetes the runner is its container's first
    process, so its exit kills every process of the container, the one listening in its place included; the kubelet
    then starts a fresh runner. What is left is the moment between the replacement and the watch (WATCH_SECONDS)."""

    def __init__(self, socket_path: Path, *, bash: str | None = None, client_uid: int | None = None) -> None:
        self.socket_path = socket_path
        self.bash = bash
        self.client_uid = client_uid
        self._connections: set[asyncio.Task[Any]] = set()

    async def serve(self, stopping: asyncio.Event, *, ready: Callable[[], None] | None = None) -> None:
        """Listen until `stopping` is set, then kill the scripts still running and remove the socket; raises
        SocketReplaced (after the same) when the socket's path stops naming it."""
        self._remove_stale_socket()
        server = await asyncio.start_unix_server(self._serve_one, path=str(self.socket_path), limit=MAX_MESSAGE_BYTES)
        bound = self.socket_path.lstat().st_ino
        # The executor runs as another uid of the pod's group: it may connect, nobody else on the host.
        os.chmod(self.socket_path, 0o660)
        log.info("script_runner_listening", socket=str(self.socket_path), pid=os.getpid())
        if ready is not None:
            ready()
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=WATCH_SECONDS)
                if not self._still_ours(bound):
                    log.critical("script_runner_socket_replaced", socket=str(self.socket_path))
                    raise SocketReplaced(
                        f"its socket {self.socket_path} was removed or replaced (a script taking it over?)"
                    )
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(FileNotFoundError):
                if self.socket_path.lstat().st_ino == bound:  # ours still, not one put there since
                    self.socket_path.unlink()
            log.info("script_runner_stopped", socket=str(self.socket_path))

    def _still_ours(self, inode: int) -> bool:
        try:
            return self.socket_path.lstat().st_ino == inode
        except FileNotFoundError:
            return False

    def _remove_stale_socket(self) -> None:
        """A socket left by a runner that was killed would make the bind fail: it is removed. One a runner still
        answers on, or anything that is not a socket, is an error (never taken over)."""
        try:
            mode = self.socket_path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(f"{self.socket_path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket_path))
            except ConnectionRefusedError:
                self.socket_path.unlink()  # nobody listens: left by a runner that was killed
                return
        raise FileExistsError(f"another script runner answers at {self.socket_path}")

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.client_uid is not None and (uid := _peer_uid(writer)) != self.client_uid:
            log.warning("script_runner_connection_refused", peer_uid=uid, allowed_uid=self.client_uid)
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._run_one(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the executor hung up, or the runner stops: the script (if any) was killed on the way out
        except Exception:
            log.exception("script_runner_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _run_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if not line:
            return  # a probe: connected and hung up
        try:
            action = RunShellScript.model_validate_json(line)
        except (ValidationError, ValueError) as exc:  # ValueError: a line over MAX_MESSAGE_BYTES
            log.warning("script_request_invalid", error=str(exc).splitlines()[0])
            await _send(writer, result=ScriptResult(exit_code=None, error="the script runner could not read the step"))
            return
        ids = {"execution_id": action.execution_id, "step": action.step_path, "attempt": action.attempt}

        async def started(process: ScriptProcess) -> None:
            log.info("script_running", pid=process.pid, **ids)
            await _send(writer, started=dataclasses.replace(process, host=process.host + RUNNER_HOST_SUFFIX))

        script = asyncio.create_task(run_script(action, bash=self.bash, on_started=started))
        # The executor sends nothing after the step: the end of its stream means it hung up.
        hung_up = asyncio.create_task(reader.read(1))
        try:
            await asyncio.wait({script, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not script.done():
                script.cancel()  # kills the script's process group
                log.info("script_abandoned", **ids)
            hung_up.cancel()
            await asyncio.gather(script, hung_up, return_exceptions=True)
        if script.cancelled():
            return  # the executor hung up: nobody to answer
        if (error := script.exception()) is not None:
            result = ScriptResult(exit_code=None, error=f"could not run the script: {error!r}")
        else:
            result = script.result()
        log.info("script_ended", exit_code=result.exit_code, error=result.error, **ids)
        await _send(writer, result=result)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED, set by the kernel)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


async def _send(writer: asyncio.StreamWriter, **message: ScriptProcess | ScriptResult) -> None:
    writer.write(json.dumps({key: dataclasses.asdict(value) for key, value in message.items()}).encode() + b"\n")
    await writer.drain()


async def serve_until_signalled(socket_path: Path, client_uid: int | None) -> None:
    """Serve on `socket_path` until SIGTERM / SIGINT."""
    stopping = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stopping.set)
    await ScriptRunnerServer(socket_path, client_uid=client_uid).serve(stopping)


def _not_dumpable() -> None:
    """No process of the runner's uid (its scripts) may ptrace it or read its memory through /proc: what it holds
    of the scripts it serves stays its own."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


_PR_SET_DUMPABLE = 4


@click.command("script-runner")
@click.option(
    "--socket",
    "socket_path",
    envvar="SIGNOFF_SCRIPT_RUNNER_SOCKET",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Unix socket to serve on; the executor's SIGNOFF_SCRIPT_RUNNER_SOCKET names the same file.",
)
@click.option(
    "--client-uid",
    envvar="SIGNOFF_SCRIPT_RUNNER_CLIENT_UID",
    type=click.IntRange(min=0),
    default=None,
    help="Serve only processes of this uid (the executor's, by the kernel's SO_PEERCRED); the scripts run as the "
    "runner's own. Unset: any process that may open the socket.",
)
@click.option(
    "--log-level", envvar="SIGNOFF_LOG_LEVEL", default="info", type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--log-format", envvar="SIGNOFF_LOG_FORMAT", default="auto", type=click.Choice(["auto", "json", "console"])
)
def script_runner(socket_path: Path, client_uid: int | None, log_level: str, log_format: str) -> None:
    """Run the executor's ShellScript steps, sent over SOCKET, until SIGTERM (give it no keys: see
    docs/deploying.md, "What a pipeline's script can reach")."""
    configure_logging(log_level, log_format, role="script-runner")
    if socket_path.name in ("", ".", ".."):
        raise click.UsageError("--socket: give the path of a file, e.g. /run/signoff-scripts/runner.sock")
    if not socket_path.parent.is_dir():
        raise click.UsageError(f"--socket: no directory {socket_path.parent}")
    try:
        _not_dumpable()
        asyncio.run(serve_until_signalled(socket_path, client_uid))
    except SocketReplaced as exc:
        raise StartupError(f"script-runner stopped: {exc}") from None
    except OSError as exc:  # a path too long for a socket, a directory it may not write, something in the way
        why = exc.strerror or str(exc)
        raise StartupError(f"script-runner did not start: {socket_path}: {why}") from None
