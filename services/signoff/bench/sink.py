"""A local HTTP sink for the notifier's webhook channel and for the bare POST loop it is compared with."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from signoff.devstack.process import free_port


class Sink:
    """Answers every POST with 200 and counts them (and their bytes), keeping the arrival time of each."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[float] = []
        self.body_bytes = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.arrivals.clear()
        self.body_bytes = 0

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.body_bytes += len(body)
        self.arrivals.append(time.perf_counter())
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=200)

    async def wait_for(self, count: int, timeout: float) -> None:
        """Until `count` POSTs have arrived (raises TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.arrivals) >= count)
