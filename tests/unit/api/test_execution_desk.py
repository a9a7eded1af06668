"""The api's start of an execution: the pipeline check runs off the event loop (one request's pipeline never stalls
the others), an alias bomb is a short 422 naming `pipeline_yaml`, and an over-large `pipeline_yaml` is refused."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.api import executions, models
from signoff.api.executions import ExecutionDesk
from signoff.api.identity import Principal
from signoff.api.problems import ApiProblem
from tests.support.yaml_bombs import alias_bomb
from tests.unit.executor.builders import as_yaml, pipeline, shell, stage

ALICE = Principal(user="alice", credential="token", credential_id="t1")


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, **_: object) -> None:
        self.sent.append((topic, value))


def desk(producer: Producer) -> ExecutionDesk:
    return ExecutionDesk(pool=None, producer=producer, catalog=None, wait_seconds=1)  # type: ignore[arg-type]


async def test_the_pipeline_check_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = executions.check_start
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def slow_check(*args, **kwargs):
        threads.append(threading.get_ident())
        started.set()
        assert release.wait(10), "the event loop did not run while the check did"
        return checked(*args, **kwargs)

    monkeypatch.setattr(executions, "check_start", slow_check)
    producer = Producer()
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(pipeline(stage("s", shell("a")))))
    start = asyncio.create_task(desk(producer).start(ALICE, request))
    assert await asyncio.to_thread(started.wait, 10)
    release.set()  # the loop is free while the check waits: this line runs, and the check goes on
    answer = await asyncio.wait_for(start, 10)
    assert threads and threads[0] != loop_thread
    assert answer.pipeline == "test_pipeline" and answer.triggered_by == "alice" and len(producer.sent) == 1


async def test_an_alias_bomb_is_a_short_422_naming_pipeline_yaml() -> None:
    producer = Producer()
    with pytest.raises(ApiProblem) as caught:
        await desk(producer).start(ALICE, models.ExecutionRequest(pipeline_yaml=alias_bomb()))
    problem = caught.value
    assert problem.status == 422 and problem.code == "invalid_pipeline"
    assert [error["field"] for error in problem.errors] == ["pipeline_yaml"]
    assert "expands to more than" in problem.detail and len(problem.detail) < 300
    assert producer.sent == []


def test_an_over_large_pipeline_yaml_is_refused() -> None:
    limit = models.ExecutionRequest.model_fields["pipeline_yaml"].metadata[-1].max_length
    assert limit == 256 * 1024
    models.ExecutionRequest(pipeline_yaml="#" * limit)
    with pytest.raises(ValidationError, match="pipeline_yaml"):
        models.ExecutionRequest(pipeline_yaml="#" * (limit + 1))


async def test_a_nul_character_in_a_variable_is_a_422_naming_it_and_nothing_is_published() -> None:
    """The executor could not store it (PostgreSQL's text refuses NUL): the run would be lost, not failed."""
    producer = Producer()
    document = as_yaml(pipeline(stage("s", shell("a")), variables=[{"name": "tag", "type": "String", "value": "1"}]))
    request = models.ExecutionRequest(pipeline_yaml=document, variables={"tag": "2.0\x00.0"})
    with pytest.raises(ApiProblem) as caught:
        await desk(producer).start(ALICE, request)
    assert (caught.value.status, caught.value.code) == (422, "invalid_request")
    assert caught.value.errors == [{"field": "variables.tag", "message": wire.NUL_PROBLEM}]
    assert producer.sent == []


async def test_at_most_concurrent_checks_run_at_once_the_rest_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = executions.check_start
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def slow_check(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        arrived.release()
        assert release.wait(10)
        with lock:
            running -= 1
        return checked(*args, **kwargs)

    monkeypatch.setattr(executions, "check_start", slow_check)
    producer = Producer()
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(pipeline(stage("s", shell("a")))))
    desk_ = desk(producer)
    starts = [asyncio.create_task(desk_.start(ALICE, request)) for _ in range(executions.CONCURRENT_CHECKS + 2)]
    for _ in range(executions.CONCURRENT_CHECKS):  # the first ones are in their threads
        assert await asyncio.to_thread(arrived.acquire, True, 10)
    release.set()
    await asyncio.wait_for(asyncio.gather(*starts), 30)
    assert most == executions.CONCURRENT_CHECKS and len(producer.sent) == len(starts)
