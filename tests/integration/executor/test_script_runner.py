"""The script runner (`signoff script-runner`): scripts sent over its Unix socket run in its process tree, not the
executor's, with run_script's behaviour; hanging up, the runner's death and its SIGTERM kill them; an executor
configured with a runner runs its pipelines' scripts there, and one whose runner is missing stops, naming it.

The runner is a real process (`python -m signoff script-runner`) with an environment of its own, as a sidecar
container has; the executor is this test process, or the role on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from signoff.executor.script_runner import (
    RUNNER_LOST,
    ScriptRunnerClient,
    ScriptRunnerServer,
    ScriptRunnerUnavailable,
    SocketReplaced,
)
from signoff.executor.scripts import ScriptProcess, ensure_gone
from signoff.runtime.service import Service
from tests.integration.executor.conftest import ExecutorRole, execution_request, script_action
from tests.support.processes import running
from tests.support.waiting import eventually
from tests.unit.executor.builders import as_yaml, pipeline, shell, stage

pytestmark = pytest.mark.integration

ANCESTORS = 'p=$$; while [ "$p" -gt 1 ]; do echo "$p"; p=$(cut -d" " -f4 /proc/$p/stat); done'
"""Prints the script's shell's pid and every ancestor's, nearest first."""


async def _gone(pid: int) -> bool:
    return not running(pid)


async def _logged(runner: RunnerProcess, event: str) -> bool:
    return f'"event": "{event}"' in runner.log()


class RunnerProcess:
    """A `signoff script-runner` process serving on a socket of this test."""

    def __init__(self, socket_path: Path, log_path: Path, *args: str) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        # Only what a sidecar container would have: none of the executor's settings.
        env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG") if name in os.environ}
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "signoff", "script-runner", "--socket", str(self.socket_path),
                "--log-format", "json", *self.args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log,
            )  # fmt: skip
        await eventually(lambda: _logged(self, "script_runner_listening"), timeout=30, what="the runner listening")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="signoff-sr-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def runner(socket_dir: Path) -> AsyncIterator[RunnerProcess]:
    process = RunnerProcess(socket_dir / "runner.sock", socket_dir / "runner.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def _pid_in(path: Path) -> int:
    def read() -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        return None

    return await eventually(lambda: asyncio.to_thread(read), timeout=30, what=f"a pid in {path.name}")


async def test_a_script_runs_in_the_runners_process_tree_with_outputs_and_exit_codes(runner) -> None:
    client = ScriptRunnerClient(runner.socket_path)
    started: list[ScriptProcess] = []

    async def on_started(process: ScriptProcess) -> None:
        started.append(process)

    result = await client(
        script_action(f'{ANCESTORS}\nURL="https://x.example.com/a=b c"', outputs={"url": "URL"}, env={"WHO": "w"}),
        on_started=on_started,
    )
    assert result.succeeded and result.outputs == {"url": "https://x.example.com/a=b c"}
    chain = [int(line) for line in result.output.split()]
    # The script's shell, its guard, then the runner: the executor (this process) is only the runner's parent.
    assert chain.index(runner.pid) == 2 and chain.index(os.getpid()) == 3
    (process,) = started
    assert process.pid == chain[1] and process.host.endswith("/script-runner")
    # Not this host's process to kill: the runner kills it when the executor hangs up.
    assert await ensure_gone(process) is True

    failed = await client(script_action("echo no; exit 3"))
    assert (failed.exit_code, failed.error, failed.output) == (3, "the script exited with code 3", "no\n")
    timed_out = await client(script_action("sleep 30", timeout=timedelta(milliseconds=300)))
    assert (timed_out.exit_code, timed_out.error) == (None, "timed out after 300ms")
    assert '"event": "script_ended"' in runner.log() and '"execution_id": "ex"' in runner.log()


async def test_hanging_up_kills_the_script_and_its_children(runner, socket_dir) -> None:
    pid_file = socket_dir / "child.pid"
    client = ScriptRunnerClient(runner.socket_path)
    call = asyncio.create_task(client(script_action(f"(echo $BASHPID > {pid_file}; sleep 300) & sleep 300")))
    child = await _pid_in(pid_file)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: _gone(child), timeout=10, what="the abandoned script's child killed")
    await eventually(lambda: _logged(runner, "script_abandoned"), timeout=10, what="the runner to log it")
    # The runner serves on.
    assert (await client(script_action("echo again"))).output == "again\n"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
async def test_the_runner_stopping_fails_the_running_script_and_kills_it(runner, socket_dir, stop) -> None:
    pid_file = socket_dir / "child.pid"
    call = asyncio.create_task(
        ScriptRunnerClient(runner.socket_path)(script_action(f"(echo $BASHPID > {pid_file}; sleep 300) & sleep 300"))
    )
    child = await _pid_in(pid_file)
    os.kill(runner.pid, stop)
    result = await asyncio.wait_for(call, timeout=30)
    assert (result.exit_code, result.error) == (None, RUNNER_LOST)
    await eventually(lambda: _gone(child), timeout=10, what="the script's child gone with the runner")
    assert runner.proc is not None
    code = await runner.proc.wait()
    if stop == signal.SIGTERM:  # a graceful stop: exit 0, the socket removed
        assert code == 0 and not runner.socket_path.exists()


async def test_no_runner_at_the_socket_is_an_error_naming_it(socket_dir) -> None:
    client = ScriptRunnerClient(socket_dir / "missing.sock", connect_timeout=0.3)
    with pytest.raises(ScriptRunnerUnavailable, match=r"no script runner answers at .*missing\.sock"):
        await client(script_action("echo never"))


@pytest.mark.parametrize(
    ("socket", "error"),
    [
        (
            "/nonexistent-dir/runner.sock",
            "error: --socket: no directory /nonexistent-dir (see `signoff script-runner --help`)",
        ),
        (
            "/tmp/" + "x" * 120 + ".sock",
            "error: script-runner did not start: /tmp/" + "x" * 120 + ".sock: AF_UNIX path too long",
        ),
        (
            "",
            "error: --socket: give the path of a file, e.g. /run/signoff-scripts/runner.sock "
            "(see `signoff script-runner --help`)",
        ),
    ],
)
def test_a_socket_it_cannot_serve_on_is_a_one_line_error(socket: str, error: str) -> None:
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "signoff", "script-runner", "--socket", socket],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == error
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_a_request_the_runner_cannot_read_is_answered_not_run(runner, socket_dir) -> None:
    reader, writer = await asyncio.open_unix_connection(str(runner.socket_path))
    writer.write(b'{"kind": "run_shell_script", "script": "touch ' + str(socket_dir).encode() + b'/ran"}\n')
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), timeout=30)
    writer.close()
    assert b"the script runner could not read the step" in reply
    assert not (socket_dir / "ran").exists()


async def test_a_runner_whose_socket_is_replaced_stops_at_once_and_kills_its_scripts(runner, socket_dir) -> None:
    """What a script of the runner's uid could do: remove the socket and listen at its path. The runner notices,
    stops (in a pod, with every process of its container) and its running scripts die."""
    pid_file = socket_dir / "child.pid"
    call = asyncio.create_task(
        ScriptRunnerClient(runner.socket_path)(script_action(f"(echo $BASHPID > {pid_file}; sleep 300) & sleep 300"))
    )
    child = await _pid_in(pid_file)
    runner.socket_path.unlink()
    impostor = await asyncio.start_unix_server(lambda r, w: None, path=str(runner.socket_path))
    try:
        assert runner.proc is not None
        assert await asyncio.wait_for(runner.proc.wait(), timeout=30) == 1
        assert (await asyncio.wait_for(call, timeout=30)).error == RUNNER_LOST
        await eventually(lambda: _gone(child), timeout=10, what="the runner's script killed")
        assert '"event": "script_runner_socket_replaced"' in runner.log()
        assert "error: script-runner stopped: its socket" in runner.log()
    finally:
        impostor.close()


async def test_a_runner_serves_only_its_client_uid(socket_dir) -> None:
    """The executor's uid only: a script (the runner's own uid) cannot have it run anything, nor relay to it."""
    ran = socket_dir / "ran"
    other = RunnerProcess(socket_dir / "r.sock", socket_dir / "r.log", "--client-uid", str(os.getuid() + 1))
    await other.start()
    try:
        result = await ScriptRunnerClient(other.socket_path)(script_action(f"touch {ran}"))
        assert (result.exit_code, result.error) == (None, RUNNER_LOST)
        assert not ran.exists()
        await eventually(lambda: _logged(other, "script_runner_connection_refused"), timeout=10, what="refusal log")
    finally:
        await other.stop()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any process's memory: nothing to tell apart")
async def test_the_runners_memory_is_not_readable_by_its_scripts(runner) -> None:
    result = await ScriptRunnerClient(runner.socket_path)(
        script_action(f"cat /proc/{runner.pid}/environ > /dev/null 2>&1 && echo readable || echo denied")
    )
    assert result.output == "denied\n"


async def test_a_second_runner_never_takes_over_a_socket_one_answers_on(runner) -> None:
    second = ScriptRunnerServer(runner.socket_path)
    with pytest.raises(FileExistsError, match="another script runner answers at"):
        await second.serve(asyncio.Event())
    assert (await ScriptRunnerClient(runner.socket_path)(script_action("echo still"))).output == "still\n"


async def test_a_runner_stopping_leaves_a_socket_that_is_not_its_own(socket_dir) -> None:
    path = socket_dir / "runner.sock"
    stopping, serving = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(ScriptRunnerServer(path).serve(stopping, ready=serving.set))
    await asyncio.wait_for(serving.wait(), timeout=30)
    path.unlink()
    other = await asyncio.start_unix_server(lambda r, w: None, path=str(path))  # put there since
    with pytest.raises(SocketReplaced):
        await asyncio.wait_for(server, timeout=30)
    assert path.exists()  # the one put there is left alone
    other.close()


async def test_a_stale_socket_is_replaced_and_anything_else_refused(socket_dir) -> None:
    stale = socket_dir / "stale.sock"
    leftover = await asyncio.start_unix_server(lambda r, w: None, path=str(stale))
    leftover.close()  # a killed runner leaves its socket file behind
    stopping = asyncio.Event()
    serving = asyncio.Event()
    server = asyncio.create_task(ScriptRunnerServer(stale).serve(stopping, ready=serving.set))
    await asyncio.wait_for(serving.wait(), timeout=30)
    assert (await ScriptRunnerClient(stale)(script_action("echo served"))).output == "served\n"
    stopping.set()
    await server

    not_a_socket = socket_dir / "file"
    not_a_socket.write_text("x")
    with pytest.raises(FileExistsError, match="is not a socket"):
        await ScriptRunnerServer(not_a_socket).serve(asyncio.Event())


async def test_an_executor_with_a_runner_runs_its_pipelines_scripts_there(
    settings, names, database_url, runner
) -> None:
    role = ExecutorRole(settings, names, database_url)
    role.settings = role.settings.model_copy(update={"script_runner_socket": runner.socket_path})
    await role.start()
    try:
        request = execution_request(
            as_yaml(pipeline(stage("s", shell("where", f"{ANCESTORS}\nHERE=runner", outputs=("here",))))),
            pipeline_id="test_pipeline",
        )
        await role.send(request)
        row = await role.wait_status(request.execution_id, "SUCCEEDED")
        assert row["reason"] is None
        chain = [int(line) for line in (await role.logs(request.execution_id))["s.where"].split()]
        assert chain.index(runner.pid) == 2
        step = await role.step(request.execution_id, "s.where")
        assert step["outputs"] == {"here": "runner"}
    finally:
        await role.stop()


async def test_an_executor_whose_runner_is_missing_stops_naming_the_socket(settings, names, database_url, socket_dir):
    role = ExecutorRole(settings, names, database_url)
    role.settings = role.settings.model_copy(update={"script_runner_socket": socket_dir / "absent.sock"})
    service = Service(role.spec(), role.settings)  # its probe waits 10 s for a (re)starting runner
    await service.start()
    try:
        with pytest.raises(ScriptRunnerUnavailable, match=r"absent\.sock"):
            await asyncio.wait_for(service.wait(), timeout=60)
    finally:
        await service.stop()
