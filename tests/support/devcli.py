"""`python -m signoff` as a process, in the environment of a user's shell: for the tests of `signoff dev`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def shell_env(home: Path) -> dict[str, str]:
    """This process's environment without any SIGNOFF_ setting, its dev stack home and config folder in `home`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")} | {
        "SIGNOFF_HOME": str(home),
        "SIGNOFF_LOG_FORMAT": "json",
        "XDG_CONFIG_HOME": str(home / "config"),
    }


def run_signoff(
    *args: str, env: dict[str, str], cwd: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`signoff ARGS…`, its output captured as text; never raises on its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "signoff", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
