"""Scripts die with their executor: a real kill -9 of an executor process leaves none of its scripts running, and a
replica resuming the execution of a frozen one (same host) kills the earlier attempt before it starts another.

The executors here are processes of their own (`python -c`, the role's Service on this test's topics), so the
kill is real and the test process is not the scripts' parent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from signoff.executor.settings import ExecutorSettings
from signoff.runtime.kafka import ensure_topics
from tests.integration.executor.conftest import CATALOG, ExecutorRole, execution_request
from tests.support.processes import running
from tests.support.waiting import eventually
from tests.unit.executor.builders import as_yaml, pipeline, shell, stage

pytestmark = pytest.mark.integration

EXECUTOR = """
import asyncio, dataclasses, sys
from signoff.executor.service import executor_spec
from signoff.executor.settings import ExecutorSettings
from signoff.runtime.logging import configure_logging
from signoff.runtime.service import Service

configure_logging("info", "console")
settings = ExecutorSettings()
spec = dataclasses.replace(executor_spec(settings), group_id=sys.argv[1], consumes=(sys.argv[2], sys.argv[3]))
asyncio.run(Service(spec, settings).run())
"""


def _env(settings: ExecutorSettings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            value = secret.get_secret_value()
        if value is not None:
            env[f"SIGNOFF_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


class Executors:
    """Executor processes of one test, all consuming its topics, as one consumer group."""

    def __init__(self, role: ExecutorRole, tmp_path: Path) -> None:
        self.role = role
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"executor-{len(self.procs)}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-c", EXECUTOR, self.role.group, self.role.requests, self.role.gates],
            env=_env(self.role.settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
async def executors(settings, names, database_url, tmp_path):
    role = ExecutorRole(settings, names, database_url)
    role.settings = ExecutorSettings(
        **{**role.settings.model_dump(), "catalog_file": CATALOG, "runner_poll_seconds": 0.05}
    )
    await ensure_topics(role.settings.model_copy(update={"kafka_topic_partitions": 1}), [role.requests, role.gates])
    from signoff.runtime.db import create_pool
    from signoff.runtime.kafka import make_producer

    role.pool = await create_pool(database_url)
    role.producer = make_producer(role.settings, "test-producer")
    await role.producer.start()
    running = Executors(role, tmp_path)
    try:
        yield running
    finally:
        running.kill_all()
        await role.producer.stop()
        await role.pool.close()


async def _pids(path: Path, count: int) -> list[int]:
    def read() -> list[int] | None:
        try:
            pids = [int(line) for line in path.read_text().split()]
        except (FileNotFoundError, ValueError):
            return None
        return pids if len(pids) >= count else None

    return await eventually(lambda: asyncio.to_thread(read), timeout=60, what=f"{count} pid(s) in {path.name}")


def _script(tmp_path: Path) -> str:
    # The script's own shell and a child of it (`sleep`, in the background so its pid is known).
    return f"echo $$ >> {tmp_path}/shells; sleep 300 & echo $! >> {tmp_path}/children; wait"


async def test_a_kill_9_of_the_executor_kills_its_scripts_and_their_children(executors, tmp_path) -> None:
    executor = executors.start()
    request = execution_request(
        as_yaml(pipeline(stage("s", shell("long", _script(tmp_path))))), pipeline_id="test_pipeline"
    )
    await executors.role.send(request)
    [shell_pid] = await _pids(tmp_path / "shells", 1)
    [child_pid] = await _pids(tmp_path / "children", 1)
    assert running(shell_pid) and running(child_pid)

    os.kill(executor.pid, signal.SIGKILL)
    executor.wait()

    async def all_gone() -> bool:
        return not running(shell_pid) and not running(child_pid)

    await eventually(all_gone, timeout=10, what="the script and its child gone with their executor")


async def test_a_replica_resuming_a_frozen_executors_script_kills_the_earlier_attempt_first(
    executors, tmp_path
) -> None:
    frozen = executors.start()
    script = shell("idempotent", _script(tmp_path), spec={"retryOnRestart": True})
    request = execution_request(as_yaml(pipeline(stage("s", script))), pipeline_id="test_pipeline")
    await executors.role.send(request)
    [first_shell] = await _pids(tmp_path / "shells", 1)
    [first_child] = await _pids(tmp_path / "children", 1)

    # Frozen, not dead: it renews no lease (2 s here) and its scripts would run on; another replica takes over.
    os.kill(frozen.pid, signal.SIGSTOP)
    executors.start()
    shells = await _pids(tmp_path / "shells", 2)
    # When the second attempt runs, nothing of the first does.
    assert not running(first_shell) and not running(first_child)
    assert running(shells[1])
    step = await executors.role.step(request.execution_id, "s.idempotent")
    assert (step["status"], step["attempt"]) == ("RUNNING", 2)


async def test_a_replica_that_cannot_renew_its_lease_kills_its_scripts(executor, infra, database_url, tmp_path):
    """The database goes away under a running script: before the lease (2 s here) could run out and another
    replica start the step again, the owner kills the script itself."""
    request = execution_request(
        as_yaml(pipeline(stage("s", shell("long", _script(tmp_path))))), pipeline_id="test_pipeline"
    )
    await executor.send(request)
    [shell_pid] = await _pids(tmp_path / "shells", 1)
    [child_pid] = await _pids(tmp_path / "children", 1)
    name = database_url.rpartition("/")[2]
    admin = await asyncpg.connect(infra.admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)

        async def all_gone() -> bool:
            return not running(shell_pid) and not running(child_pid)

        await eventually(all_gone, timeout=10, what="the script killed by its own executor")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
