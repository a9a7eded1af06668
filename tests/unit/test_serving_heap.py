"""A role serves with its start-up objects out of the cyclic collector's sight and with rarer young collections."""

from __future__ import annotations

import asyncio
import gc

from signoff.runtime.service import SERVING_GC_THRESHOLDS, run_until_signalled

DEFAULT_THRESHOLDS = (700, 10, 10)  # CPython's


class _Probe:
    """A role that records the collector's state while it serves."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.serving: dict[str, object] = {}

    async def start(self) -> None:
        self.serving["frozen_before"] = gc.get_freeze_count()

    async def wait(self) -> None:
        self.serving["threshold"] = gc.get_threshold()
        self.serving["frozen"] = gc.get_freeze_count()

    async def stop(self) -> None:
        pass


async def test_a_role_serves_with_its_start_up_objects_frozen_and_rarer_collections() -> None:
    saved = gc.get_threshold()
    # From CPython's defaults, whatever ran in this process before (a test that ran a role in-process settled it)
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLDS)
    probe = _Probe()
    try:
        await run_until_signalled(probe)
    finally:
        gc.unfreeze()  # this test process goes on as before
        gc.set_threshold(*saved)
    assert probe.serving["threshold"] == SERVING_GC_THRESHOLDS != DEFAULT_THRESHOLDS
    # frozen once started: the imported modules, their functions and classes at least
    assert probe.serving["frozen"] > probe.serving["frozen_before"] + 10_000
