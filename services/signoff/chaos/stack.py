"""`signoff dev up` as a child process: the supervisor that restarts killed roles, and the pids it prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from signoff.cli.roles import ROLES
from signoff.runtime.devenv import ENV_FILE, read_env_file


class ChaosError(RuntimeError):
    """The suite could not run (the stack did not start, a wait ran out)."""


class SupervisedStack:
    """`signoff dev up --state-dir DIR` in the foreground, its output kept (and written to DIR/dev-up.log)."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.env = env
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 180.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signoff", "dev", "up", "--state-dir", str(self.state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(r"\| ready:", timeout=timeout)
        for role in ROLES:  # migrated, consuming
            self.wait_for(rf"^{role}\s*\|.*service_started", timeout=timeout)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.state_dir / "dev-up.log", "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                with self._lock:
                    self.lines.append(line.rstrip())

    def snapshot(self) -> list[str]:
        """The supervisor's lines so far."""
        with self._lock:
            return list(self.lines)

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for line in self.lines[after:]:
                    if match := re.search(pattern, line):
                        return match
            if self.proc is not None and self.proc.poll() is not None:
                raise ChaosError(f"dev up exited with code {self.proc.returncode}: {self.lines[-5:]}")
            if time.monotonic() > deadline:
                raise ChaosError(f"no line matching {pattern!r} within {timeout:.0f}s")
            time.sleep(0.05)  # polling the supervisor's output with a deadline

    @property
    def settings_env(self) -> dict[str, str]:
        return read_env_file(self.state_dir / ENV_FILE)

    def pids(self) -> dict[str, int]:
        """The current pid of every role and of `broker` / `postgres`, read from the supervisor's lines."""
        with self._lock:
            lines = list(self.lines)
        current: dict[str, int] = {}
        restarting: str | None = None
        for line in lines:
            if match := re.search(
                r"role (\S+) (?:started|restarted) \(pid (\d+)\)|\| (broker|postgres) .*\(pid (\d+),", line
            ):
                name, pid = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
                current[name] = int(pid)
            elif match := re.search(r"\| (broker|postgres) exited with code", line):
                restarting = match.group(1)
            elif (match := re.search(r"started again \(pid (\d+)\)", line)) and restarting:
                current[restarting], restarting = int(match.group(1)), None
        return current

    def pid(self, role: str) -> int:
        try:
            return self.pids()[role]
        except KeyError:
            raise ChaosError(f"no pid known for {role}") from None

    def kill(self, role: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(role)
        os.kill(pid, sig)
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
