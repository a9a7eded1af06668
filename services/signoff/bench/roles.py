"""Service roles run as child processes, exactly as `signoff dev up` and the container image run them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from signoff.devstack.process import free_port, last_line, spawn, stop


class BenchError(RuntimeError):
    """The benchmark could not run (a role or the infrastructure failed); the message is one line."""


class RoleProcess:
    """`python -m signoff ROLE` with its health server on a free loopback port and its output in a log file."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path) -> None:
        self.role = role
        self.port = free_port()
        self.env = env | {"SIGNOFF_HTTP_HOST": "127.0.0.1", "SIGNOFF_HTTP_PORT": str(self.port)}
        self.log_path = log_dir / f"{role}.log"
        self.proc = None

    async def start(self, timeout: float = 120.0) -> None:
        """Start the role and return once /readyz answers 200 (joined its group, pool healthy)."""
        self.proc = spawn([sys.executable, "-m", "signoff", self.role], log_path=self.log_path, env=self.env)
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"role {self.role} exited with code {self.proc.returncode}: {last_line(self.log_path)}"
                    )
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass  # not listening yet
                if asyncio.get_running_loop().time() > deadline:
                    raise BenchError(f"role {self.role} not ready after {timeout:.0f}s: {last_line(self.log_path)}")
                await asyncio.sleep(0.2)  # polling a readiness endpoint: there is no event to wait on

    def memory(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in bytes, from /proc."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        """SIGTERM (graceful drain), killed after a grace period."""
        if self.proc is not None:
            stop(self.proc, grace=30)


def role_env(base: dict[str, str], **settings: str) -> dict[str, str]:
    """The environment of a role: this process's, the stack's settings, then `settings` (SIGNOFF_ names)."""
    return dict(os.environ) | base | settings
