"""A replica runs at most SIGNOFF_MAX_SCRIPTS scripts at once: steps started beyond it wait for a slot (the step
stays RUNNING, leased by this replica) and run when one frees, so a burst of runs cannot fork without bound."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.integration.executor.conftest import execution_request
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
