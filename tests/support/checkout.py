"""A copy of this checkout in a private (0700) folder, as a fresh clone under /root or a `mktemp -d` folder is,
driven through its own `./signoffw` like a newcomer would."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a clone does not have (or has only after `./signoffw` made it).
_NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".signoff",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    "node_modules",
)


@dataclass
class Checkout:
    """The copy at `root` (inside the private `folder`) and the environment its commands run with."""

    folder: Path
    root: Path
    env: dict[str, str]

    def run(self, command: str, *, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """One shell command line, in `cwd` (the checkout's root by default); stdout and stderr together."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=cwd or self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def stack_log(self) -> Path:
        """What `./signoffw dev up` would have printed in its terminal (the detached stack's log)."""
        return self.root / ".signoff" / "dev" / "dev-up.log"


def _venv_serves(root: Path) -> bool:
    """Whether this test's own venv is the one `./signoffw` installed for this pyproject.toml: then the copy's
    wrapper uses it as it is (it would reinstall into it otherwise)."""
    stamp = Path(sys.prefix) / ".signoff-installed"
    want = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    with contextlib.suppress(OSError):
        return stamp.read_text().strip() == want
    return False


@contextlib.contextmanager
def private_checkout(*, start_stack: bool = True) -> Iterator[Checkout]:
    """Copy the checkout into a fresh 0700 folder and (by default) start its dev stack the README's way,
    `./signoffw dev up --detach`; afterwards `./signoffw dev down --purge` and the folder is removed."""
    if not _venv_serves(REPO):
        pytest.skip("needs the venv ./signoffw made for this pyproject.toml: run the tests with ./signoffw test")
    folder = Path(tempfile.mkdtemp(prefix="signoff-private-"))  # mode 0700, like /root
    root = folder / "x"
    shutil.copytree(REPO, root, ignore=_NOT_IN_A_CLONE, symlinks=True)
    # A newcomer's shell: none of the test session's settings; the wrapper's venv is this one, already installed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")} | {
        "SIGNOFF_VENV": sys.prefix,
        "PYTHON": sys.executable,
    }
    checkout = Checkout(folder, root, env)
    try:
        if start_stack:
            up = checkout.run("./signoffw dev up --detach")
            assert up.returncode == 0, up.stdout
        yield checkout
    finally:
        down = checkout.run("./signoffw dev down --purge", timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    assert down.returncode == 0, down.stdout  # reached only when the tests passed: their failure comes first
