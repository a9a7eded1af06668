"""Where a running `signoff dev up` publishes how to reach it: an env file (no secrets) beside the pid of its
supervisor. The dev stack writes them (signoff.devstack); the settings of every role and CLI command read them, with
the lowest priority, so commands on the developer's machine find the stack without exports."""

from __future__ import annotations

import os
from pathlib import Path

ENV_FILE = "env"
PID_FILE = "supervisor.pid"


DEV_STATE_DIR_VARIABLE = "SIGNOFF_DEV_STATE_DIR"
"""The state dir of the dev stack `signoff dev env` describes: found first by every command."""


def find_env_file(start: Path | None = None) -> Path | None:
    """The env file of a running dev stack in `start` or one of its parents (so commands run from a
    sub-folder find it too); first the one $SIGNOFF_DEV_STATE_DIR names (`dev env` exports it)."""
    if state_dir := os.environ.get(DEV_STATE_DIR_VARIABLE):
        candidate = Path(state_dir) / ENV_FILE
        return candidate if candidate.is_file() else None
    if home := os.environ.get("SIGNOFF_HOME"):
        candidate = Path(home) / "dev" / ENV_FILE
        return candidate if candidate.is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / ".signoff" / "dev" / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the `signoff dev up` that owns `state_dir`, if it is still running."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return pid


def supervisor_alive(state_dir: Path) -> bool:
    """Whether the `signoff dev up` that owns `state_dir` is still running."""
    return supervisor_pid(state_dir) is not None


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file (`export NAME='value'` lines)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :]
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values
