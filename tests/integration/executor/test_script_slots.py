"""A replica runs at most SIGNOFF_MAX_SCRIPTS scripts at once: steps started beyond it wait for a slot (the step
stays RUNNING, leased by this replica) and run when one frees, so a burst of runs cannot fork without bound."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from signoff.executor.repository import ExecutorRepository
from tests.integration.executor.conftest import execution_request
from tests.support.waiting import eventually
from tests.unit.executor.builders import as_yaml, parallel, pipeline, shell, stage

pytestmark = pytest.mark.integration

# Each script notes when it ran (nanoseconds); long enough that scripts run together would overlap.
TIMED = "BEGAN=$(date +%s%N)\nsleep 0.3\nENDED=$(date +%s%N)"


async def test_steps_beyond_the_limit_wait_for_a_slot_and_all_run(executor) -> None:
    await executor.stop_service()
    executor.settings = executor.settings.model_copy(update={"max_scripts": 2})
    await executor.start_service()
    steps = ("a", "b", "c", "d")
    text = as_yaml(pipeline(stage("s", parallel(*(shell(step, TIMED, outputs=("began", "ended")) for step in steps)))))
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)
    await executor.wait_status(request.execution_id, "SUCCEEDED")

    runs = []
    for step in steps:
        outputs = (await executor.step(request.execution_id, f"s.{step}"))["outputs"]
        runs.append((int(outputs["began"]), int(outputs["ended"])))
    # At any moment at most two of the four ran ...
    moments = sorted([(began, 1) for began, _ in runs] + [(ended, -1) for _, ended in runs], key=lambda m: (m[0], m[1]))
    running = most = 0
    for _, change in moments:
        running += change
        most = max(most, running)
    assert most <= 2, runs
    # ... because two waited for a slot: begun together they would all have begun before the first one ended.
    first_end = min(ended for _, ended in runs)
    assert sum(began >= first_end for began, _ in runs) >= 2, runs
    assert REGISTRY.get_sample_value("signoff_executor_scripts_waiting") == 0  # none left waiting


async def test_a_step_that_waited_for_a_slot_on_a_replica_that_died_runs_on_the_next(
    executor, monkeypatch, tmp_path
) -> None:
    """Only a script that may have run falls under the restart rule: the step that was still waiting for a slot
    (no `retryOnRestart`) runs when another replica takes the execution over, instead of failing."""
    await executor.stop_service()
    executor.settings = executor.settings.model_copy(update={"max_scripts": 1})
    await executor.start_service()
    marker = tmp_path / "holder-ran"
    # The first step holds the only slot until its replica dies; its next attempt (retryOnRestart) ends at once.
    holder = f"if [ -e {marker} ]; then exit 0; fi\ntouch {marker}\nsleep 60"
    text = as_yaml(
        pipeline(
            stage(
                "s",
                parallel(shell("holder", holder, spec={"retryOnRestart": True}), shell("waited", "echo waited ran")),
            )
        )
    )
    request = execution_request(text, pipeline_id="test_pipeline")
    await executor.send(request)

    async def holding_and_waiting() -> bool:
        return marker.exists() and REGISTRY.get_sample_value("signoff_executor_scripts_waiting") == 1

    await eventually(holding_and_waiting, what="the holder running and the other step waiting for the slot")

    async def died(self, conn, me):  # a replica that dies gives nothing back: its lease has to run out
        return 0

    monkeypatch.setattr(ExecutorRepository, "release_leases", died)
    await executor.stop_service()
    await executor.start_service()

    await executor.wait_status(request.execution_id, "SUCCEEDED")
    waited = await executor.step(request.execution_id, "s.waited")
    assert (waited["status"], waited["attempt"]) == ("SUCCEEDED", 2)
    assert (await executor.step(request.execution_id, "s.holder"))["attempt"] == 2
    assert (await executor.logs(request.execution_id))["s.waited"].strip() == "waited ran"
