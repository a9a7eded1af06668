"""ShellScript steps run for real: Bash, output variables, exit codes, a clean environment, the wall-clock safety
timeout. (No broker or database: the subprocess is the real part here.)"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from signoff.executor.scripts import run_script
from tests.integration.executor.conftest import script_action as _action
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


async def test_outputs_are_read_from_the_shell_after_the_script() -> None:
    result = await run_script(
        _action(
            'echo "hello $WHO"\nURL="https://x.example.com/a=b c"\nMULTI=$(printf "one\\ntwo")\n',
            outputs={"url": "URL", "multi": "MULTI", "never": "NEVER_SET"},
            env={"WHO": "world"},
        )
    )
    assert result.succeeded and result.exit_code == 0
    assert result.output == "hello world\n"
    # A variable the script never set is left out: an expression using it stays unresolved, never blank.
    assert result.outputs == {"url": "https://x.example.com/a=b c", "multi": "one\ntwo"}


async def test_a_non_zero_exit_fails_and_the_environment_holds_no_executor_secret(monkeypatch) -> None:
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", "postgresql://secret@db/x")
    result = await run_script(_action('echo "db=${SIGNOFF_DATABASE_URL-unset}"; exit 7', outputs={"x": "X"}))
    assert not result.succeeded and result.exit_code == 7
    assert result.error == "the script exited with code 7" and result.outputs == {}
    assert result.output.strip() == "db=unset"
    assert os.environ["SIGNOFF_DATABASE_URL"]  # still the executor's, only hidden from the script


async def test_the_wall_clock_timeout_kills_the_script_and_its_children(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    result = await run_script(
        _action(f"(echo $BASHPID > {pid_file}; sleep 30) & sleep 30", timeout=timedelta(milliseconds=500))
    )
    assert result.exit_code is None and result.error == "timed out after 500ms"
    child = int(pid_file.read_text())

    def child_gone() -> bool:
        status = Path(f"/proc/{child}/status")
        try:
            state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
        except (FileNotFoundError, ProcessLookupError):
            return True
        return "Z" in state.split()[1]  # killed, waiting to be reaped

    await eventually(
        lambda: asyncio.to_thread(child_gone), timeout=10, what="the script's background child to be killed"
    )
