"""Running a ShellScript step for real: Bash in a fresh working directory, output variables read back afterwards.

The script runs in its own process group with a clean environment: PATH, HOME (its working directory), LANG and
the step's environment variables, never the executor's own settings (the database URL and Kafka password live
there). After the script, a Bash EXIT trap writes each declared output variable that is set to a file, NUL
separated, so values may hold any text; a variable the script never set is left out (its expression then stays
unresolved instead of being silently blank). Cancellation kills the whole process group.

Scripts die with their executor: the process the executor starts is a small Bash guard, the leader of the
script's process group, with a parent-death signal (SIGTERM) on which it kills the whole group. So a kill -9 of the
executor never leaves a script running on alone (a `retryOnRestart` step would otherwise run twice at once, and
a step marked failed by the restart rule could go on and succeed). Only a process that leaves the group on
purpose (`setsid`) escapes. A replica resuming an execution after the owner's lease ran out also kills the earlier
attempt's group itself when it runs on the same host (`ensure_gone`), in case the owner was frozen, not dead.

The process that calls `run_script` is the executor, or the script runner (script_runner.py), which keeps the
scripts away from the executor's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from signoff.contracts.durations import format_duration
from signoff.devstack.process import die_with_parent
from signoff.executor.domain.actions import RunShellScript

OUTPUT_TAIL_BYTES = 64 * 1024
"""How much of a script's output is kept (the end of it)."""

_WRAPPER = """__signoff_outputs() {{
  __signoff_rc=$?
  if [ "$__signoff_rc" -eq 0 ]; then
{writes}
    :
  fi
  exit "$__signoff_rc"
}}
trap __signoff_outputs EXIT
. "$SIGNOFF_STEP_SCRIPT"
"""
_GUARD = """trap 'kill -KILL 0' TERM
"$BASH" "$SIGNOFF_STEP_WRAPPER" &
wait "$!"
"""
# The trap is set before the script starts, so a parent death at any moment leaves nothing behind; `wait` (unlike
# a foreground command) lets the trap run at once.
_WRITE = """    if [ -n "${{{var}+x}}" ]; then printf '%s=%s\\0' '{var}' "${{{var}}}" >> "$SIGNOFF_STEP_OUTPUTS"; fi"""


@dataclass(frozen=True)
class ScriptResult:
    """How a script ended: exit code (None when it timed out), output variables by output name, output tail."""

    exit_code: int | None
    outputs: dict[str, str] = field(default_factory=dict)
    output: str = ""
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error is None


@dataclass(frozen=True)
class ScriptProcess:
    """The leader of a running script's process group: enough to find it again, and never mistake a reused pid."""

    host: str
    pid: int
    started: int


class RunsScripts(Protocol):
    """Runs a step's script to its end: `run_script` below (a process of the executor), or the script runner's
    client (script_runner.py: a process of the runner, away from the executor's keys)."""

    async def __call__(
        self, action: RunShellScript, *, on_started: Callable[[ScriptProcess], Awaitable[None]] | None = None
    ) -> ScriptResult: ...


def this_host() -> str:
    """Hostname and boot id: pids mean the same process only on the same host since the same boot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of `pid`, or None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2]), int(fields[19])


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            state, group, _ = stat
            if group == pgid and state not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def describe(pid: int) -> ScriptProcess | None:
    """`pid` as a ScriptProcess of this host, or None when it is gone already."""
    stat = _stat(pid)
    return None if stat is None else ScriptProcess(this_host(), pid, stat[2])


async def ensure_gone(process: ScriptProcess, *, timeout: float = 5.0) -> bool:
    """Kill the process group of an earlier attempt that runs on this host and wait until none of it runs.

    True when it is gone (or never was ours to kill: another host, or its pid now belongs to another process);
    False when something of it still runs after `timeout` (a process stuck in the kernel)."""
    if process.host != this_host():
        return True
    leader = _stat(process.pid)
    if leader is not None and leader[2] != process.started:
        return True  # the pid was reused: the earlier group is gone
    deadline = time.monotonic() + timeout
    while _group_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)  # the kernel tears the group down; poll with a deadline
    return True


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await process.wait()


async def _tail(stream: asyncio.StreamReader, keep: bytearray) -> None:
    while chunk := await stream.read(8192):
        keep.extend(chunk)
        if len(keep) > OUTPUT_TAIL_BYTES:
            del keep[: len(keep) - OUTPUT_TAIL_BYTES]


async def run_script(
    action: RunShellScript,
    *,
    bash: str | None = None,
    on_started: Callable[[ScriptProcess], Awaitable[None]] | None = None,
) -> ScriptResult:
    """Run the script of `action` to its end, or until `action.timeout` passes on the wall clock (a safety net:
    the state machine also fails it at its deadline on the executor's clock). Cancelling the call kills it.
    `on_started` learns its process group's leader once it runs (to record it)."""
    bash = bash or shutil.which("bash") or "/bin/bash"
    workdir = Path(tempfile.mkdtemp(prefix="signoff-step-"))
    try:
        script = workdir / "script.sh"
        outputs_file = workdir / "outputs"
        script.write_text(action.script)
        variables = list(dict.fromkeys(action.output_variables.values()))
        wrapper = workdir / "wrapper.sh"
        wrapper.write_text(_WRAPPER.format(writes="\n".join(_WRITE.format(var=var) for var in variables)))
        guard = workdir / "guard.sh"
        guard.write_text(_GUARD)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            **action.environment,  # the step may set its own PATH, LANG, …
            "SIGNOFF_STEP_SCRIPT": str(script),
            "SIGNOFF_STEP_OUTPUTS": str(outputs_file),
            "SIGNOFF_STEP_WRAPPER": str(wrapper),
        }
        parent = os.getpid()
        process = await asyncio.create_subprocess_exec(
            bash,
            str(guard),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches the children it started too
            preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM),  # the guard then kills the group
        )
        kept = bytearray()
        assert process.stdout is not None
        reader = asyncio.create_task(_tail(process.stdout, kept))
        try:
            if on_started is not None and (started := describe(process.pid)) is not None:
                await on_started(started)
            async with asyncio.timeout(action.timeout.total_seconds()):
                await process.wait()
                await reader
        except TimeoutError:
            await _kill(process)
            reader.cancel()
            return ScriptResult(
                exit_code=None,
                output=kept.decode(errors="replace"),
                error=f"timed out after {format_duration(action.timeout)}",
            )
        except BaseException:
            await _kill(process)
            reader.cancel()
            raise
        output = kept.decode(errors="replace")
        code = process.returncode
        if code != 0:
            return ScriptResult(exit_code=code, output=output, error=f"the script exited with code {code}")
        by_variable: dict[str, str] = {}
        if outputs_file.exists():
            for item in outputs_file.read_bytes().decode(errors="replace").split("\0"):
                if "=" in item:
                    name, value = item.split("=", 1)
                    by_variable[name] = value
        outputs = {name: by_variable[var] for name, var in action.output_variables.items() if var in by_variable}
        return ScriptResult(exit_code=0, outputs=outputs, output=output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
