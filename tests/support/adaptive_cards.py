"""Validate Adaptive Cards with the Adaptive Cards JavaScript library's own parser (the npm package `adaptivecards`,
pinned in tests/support/adaptivecards/package-lock.json), as a Teams client parses them. The package is installed
once into the virtual environment (`npm ci`); Node.js and npm are needed (both are on the project's machines)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

TOOL = Path(__file__).resolve().parent / "adaptivecards"


def _installed() -> Path:
    """node_modules with the pinned `adaptivecards`, installed on first use next to the virtual environment.

    Test workers run in parallel, and `npm ci` removes node_modules before it installs: a file lock lets one worker
    install while the others wait, and the stamp is written only once the install has finished."""
    target = Path(sys.prefix) / "adaptivecards"
    target.mkdir(parents=True, exist_ok=True)
    lock = (TOOL / "package-lock.json").read_bytes()
    stamp = target / "installed-package-lock.json"
    with (target / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_bytes() == lock and (target / "node_modules" / "adaptivecards").is_dir():
            return target / "node_modules"
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install the adaptivecards package the Teams card tests use")
        stamp.unlink(missing_ok=True)
        shutil.copy(TOOL / "package.json", target / "package.json")
        shutil.copy(TOOL / "package-lock.json", target / "package-lock.json")
        subprocess.run(
            [npm, "ci", "--legacy-peer-deps", "--no-audit", "--no-fund", "--silent"],
            cwd=target,
            check=True,
            timeout=300,
        )
        stamp.write_bytes(lock)
    return target / "node_modules"


def card_problems(cards: list[dict[str, Any]]) -> list[list[str]]:
    """Per card, every message the Adaptive Cards parser and validator reported (empty: valid)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is needed to run the Adaptive Cards parser")
    done = subprocess.run(
        [node, str(TOOL / "validate.js"), str(_installed())],
        input=json.dumps(cards),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Adaptive Cards validator exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)
