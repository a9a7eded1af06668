"""Running a ShellScript step for real: Bash in a fresh working directory, output variables read back afterwards.

The script runs in its own process group with a clean environment: PATH, HOME (its working directory), LANG and
the step's environment variables, never the executor's own settings (the database URL and Kafka password live
there). After the script, a Bash EXIT trap writes each declared output variable that is set to a file, NUL
separated, so values may hold any text; a variable the script never set is left out (its expression then stays
unresolved instead of being silently blank). Cancellation kills the whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from signoff.contracts.durations import format_duration
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


async def run_script(action: RunShellScript, *, bash: str | None = None) -> ScriptResult:
    """Run the script of `action` to its end, or until `action.timeout` passes on the wall clock (a safety net:
    the state machine also fails it at its deadline on the executor's clock). Cancelling the call kills it."""
    bash = bash or shutil.which("bash") or "/bin/bash"
    workdir = Path(tempfile.mkdtemp(prefix="signoff-step-"))
    try:
        script = workdir / "script.sh"
        outputs_file = workdir / "outputs"
        script.write_text(action.script)
        variables = list(dict.fromkeys(action.output_variables.values()))
        wrapper = workdir / "wrapper.sh"
        wrapper.write_text(_WRAPPER.format(writes="\n".join(_WRITE.format(var=var) for var in variables)))
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            **action.environment,  # the step may set its own PATH, LANG, …
            "SIGNOFF_STEP_SCRIPT": str(script),
            "SIGNOFF_STEP_OUTPUTS": str(outputs_file),
        }
        process = await asyncio.create_subprocess_exec(
            bash,
            str(wrapper),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches the children it started too
        )
        kept = bytearray()
        assert process.stdout is not None
        reader = asyncio.create_task(_tail(process.stdout, kept))
        try:
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
