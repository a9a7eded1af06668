"""/healthz (liveness: the loop is alive), /readyz (readiness: joined the group and the pool answers) and
/metrics (Prometheus) for one role."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signoff.runtime.consumer import LoopState
from signoff.runtime.metrics import RoleView

STALL_SECONDS = 60.0


class HealthServer:
    """A small aiohttp server; `port` is the bound port after start() (settings may ask for 0 = any)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pool: asyncpg.Pool,
        loops: list[LoopState],
        extra_ready: Callable[[], Awaitable[str | None]] | None = None,
        role: str | None = None,
    ) -> None:
        """`role`: /metrics serves the runtime's metrics and this role's (`role_metrics`), not other roles'."""
        self.host, self.port = host, port
        self.view = RoleView(role)
        self.pool = pool
        self.loops = loops
        self.extra_ready = extra_ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self._runner.addresses:
            self.port = self._runner.addresses[0][1]  # the bound port, when settings asked for 0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, _request: web.Request) -> web.Response:
        now = time.monotonic()
        stalled = [i for i, state in enumerate(self.loops) if now - state.last_iteration > STALL_SECONDS]
        if stalled:
            return web.json_response({"status": "stalled", "loops": stalled}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = []
        if not all(state.joined for state in self.loops):
            problems.append("consumer group not joined")
        if any(state.failing_since is not None for state in self.loops):
            problems.append("batches failing (database or broker unavailable)")
        # Waited on, not awaited under a timeout: cancelling a query on a frozen server waits for the server (the
        # connection's reset), and a probe must answer within its own budget.
        check = asyncio.ensure_future(self.pool.fetchval("SELECT 1"))
        done, _ = await asyncio.wait({check}, timeout=2)
        if not done:
            check.cancel()
            problems.append("database: no answer within 2s")
        elif (exc := check.exception()) is not None:  # any failure means not ready; reported, not raised
            problems.append(f"database: {type(exc).__name__}")
        if self.extra_ready is not None and (problem := await self.extra_ready()):
            problems.append(problem)
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.view), headers={"Content-Type": CONTENT_TYPE_LATEST})
