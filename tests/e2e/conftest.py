"""The whole system as a newcomer runs it: `signoff dev up --detach` (its own embedded broker and PostgreSQL, and the
executor, approval, notifier and api roles as separate processes), a local webhook sink the notifier is routed to,
and the `signoff` CLI run as a subprocess for every step, exactly as in the README's walkthrough: each person with a
token of their own (`signoff dev token USER`) and nothing else but the API's URL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from signoff.runtime.devenv import ENV_FILE, read_env_file
from tests.support.seeds import CODEPIPELINE_DECISION
from tests.support.waiting import eventually_sync

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pipelines" / "blue-green.yaml"
CATALOG = REPO / "examples" / "catalog.yaml"
SEED_DECISION = CODEPIPELINE_DECISION  # the CodePipeline seed's approvalstage-approved.json, verbatim
DIRECTORY = """\
groups:
  docs:
    - {user: dana, email: dana@example.com, slack: U0DANA}
    - {user: eli, email: eli@example.com}
  sre:
    - {user: alice, email: alice@example.com}
    - {user: bob, email: bob@example.com, slack: U0BOB}
    - {user: carol, email: carol@example.com, teams: carol@example.com}
"""


@dataclass
class Received:
    """One POST the sink got: the CloudEvents HTTP binding headers and the body (the event's data)."""

    event_type: str
    subject: str
    body: dict
    raw: str
    traceparent: str = ""


@dataclass
class WebhookSink:
    """A real HTTP server on 127.0.0.1 standing in for the team's webhook consumer."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                with sink.lock:
                    sink.received.append(
                        Received(
                            self.headers.get("ce-type", ""),
                            self.headers.get("ce-subject", ""),
                            json.loads(raw),
                            raw,
                            self.headers.get("traceparent", ""),
                        )
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def of_gate(self, gate_id: str, event_type: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.event_type == event_type and r.body.get("gate_id") == gate_id]


@dataclass
class System:
    env: dict[str, str]
    sink: WebhookSink
    work: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A server-side command (`dev …`): run where the stack is, with its settings."""
        return self._run(args, self.env, check)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.admin("dev", "token", user).stdout.strip()
        return self.tokens[user]

    def client_env(self, user: str) -> dict[str, str]:
        """What an approver's laptop has: the API's URL and their own token. No database URL, no broker address,
        no decision key, and no dev stack to find settings in."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
        env = base | {
            "SIGNOFF_API_URL": read_env_file(self.work / "dev" / ENV_FILE)["SIGNOFF_API_URL"],
            "SIGNOFF_TOKEN": self.token(user),
            "XDG_CONFIG_HOME": str(self.work / "config" / user),
            "HOME": str(self.work / "home"),
        }
        assert not {"SIGNOFF_DATABASE_URL", "SIGNOFF_KAFKA_BOOTSTRAP", "SIGNOFF_DECISION_KEYS"} & env.keys()
        return env

    def log_tail(self, role: str, lines: int = 60) -> str:
        """The last `lines` lines of `role`'s output in the stack's log (to explain a failed wait)."""
        path = self.work / "dev" / "dev-up.log"
        if not path.is_file():
            return f"(no {path})"
        mine = [line for line in path.read_text(errors="replace").splitlines() if line.startswith(f"{role:<9}|")]
        return "\n".join(mine[-lines:])

    def signoff(self, *args: str, user: str = "alice", check: bool = True) -> subprocess.CompletedProcess[str]:
        """A client command as `user` (from a folder with no dev stack in it)."""
        return self._run(args, self.client_env(user), check, cwd=self.work / "home")

    def _run(self, args, env, check: bool, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        if cwd is not None:
            cwd.mkdir(exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "signoff", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
            cwd=cwd,
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def execution(self, execution_id: str) -> dict | None:
        rows = json.loads(self.signoff("executions", "--json", "--limit", "500").stdout)
        return next((row for row in rows if row["execution_id"] == execution_id), None)

    def wait_status(self, execution_id: str, status: str, timeout: float = 90) -> dict:
        def reached():
            row = self.execution(execution_id)
            return row if row is not None and row["status"] == status else None

        return eventually_sync(reached, timeout=timeout, what=f"execution {execution_id} {status}")

    def waiting_approval(self, pipeline: str, timeout: float = 90) -> dict:
        """The waiting approval action of `pipeline` in get-pipeline-state (with its token and gate id)."""

        def waiting():
            state = json.loads(
                self.signoff("get-pipeline-state", "--name", pipeline, "--json", check=False).stdout or "{}"
            )
            for stage in state.get("stageStates", []):
                for action in stage["actionStates"]:
                    if "token" in action.get("latestExecution", {}):
                        return {
                            "stage": stage["stageName"],
                            "action": action["actionName"],
                            **action["latestExecution"],
                        }
            return None

        return eventually_sync(waiting, timeout=timeout, what=f"{pipeline} waiting at its approval step")

    def pipeline(self, name: str, *, renames: dict[str, str], timeout: str | None = None, **changes) -> Path:
        """The example pipeline with identifiers renamed (`renames`: old -> new, e.g. its pipeline identifier), its
        Wait steps cut to a second, and the approval step's timeout and spec changed (`approvers`, ...); written to
        a file of its own."""
        text = EXAMPLE.read_text()
        for old, new in renames.items():
            text = text.replace(old, new)
        document = yaml.safe_load(text)

        def visit(node: object) -> None:
            if isinstance(node, dict):
                if node.get("type") == "Wait":
                    node["spec"]["duration"] = "1s"
                if node.get("type") == "HarnessApproval":
                    node["spec"].update(changes)
                    if timeout is not None:
                        node["timeout"] = timeout
                for value in node.values():
                    visit(value)
            elif isinstance(node, list):
                for value in node:
                    visit(value)

        visit(document)
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path


@contextlib.contextmanager
def running_system(*, channels: str = "", routes: str = "", env: dict[str, str] | None = None) -> Iterator[System]:
    """A dev stack routed to the webhook sink (and to `channels` / `routes`, routing YAML lines), with `env` on top
    of the operator's settings; torn down when the block ends."""
    # A private (0700) folder: as root, the stack keeps PostgreSQL's files where its account can reach them.
    work = Path(tempfile.mkdtemp(prefix="signoff-e2e-"))
    state = work / "dev"
    sink = WebhookSink()
    server = ThreadingHTTPServer(("127.0.0.1", 0), sink.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (work / "directory.yaml").write_text(DIRECTORY)
    (work / "routing.yaml").write_text(
        "channels:\n"
        "  - name: team-hook\n"
        "    type: webhook\n"
        f"    settings: {{url: 'http://127.0.0.1:{server.server_port}/hook'}}\n"
        "    secret_ref: team-hook\n"
        f"{channels}"
        "routes:\n"
        "  - groups: ['*']\n"
        "    channels: [team-hook]\n"
        f"{routes}"
    )
    # What an operator's shell would have: no settings of the test session, the stack's env file gives the rest.
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
        | {
            "SIGNOFF_HOME": str(work),
            "SIGNOFF_LOG_FORMAT": "json",
            "SIGNOFF_DIRECTORY_FILE": str(work / "directory.yaml"),
            "SIGNOFF_ROUTING_FILE": str(work / "routing.yaml"),
            "SIGNOFF_CHANNEL_SECRET_TEAM_HOOK": "e2e-hmac-key",
            "SIGNOFF_CATALOG_FILE": str(CATALOG),
            "SIGNOFF_APPROVAL_PAGE_URL": "http://127.0.0.1:9/approvals",
            "SIGNOFF_EXPIRY_INTERVAL_SECONDS": "0.5",
            "SIGNOFF_METRICS_GAUGE_INTERVAL_SECONDS": "0.5",
            "SIGNOFF_API_DECISION_WAIT_SECONDS": "60",
            # A group join waits about half the session timeout on the embedded broker: the roles join in 2 s
            # instead of 5 (the test session's own consumers use 2 s; 4 s leaves a loaded machine room to heartbeat).
            "SIGNOFF_KAFKA_SESSION_TIMEOUT_MS": "4000",
            "SIGNOFF_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        }
        | (env or {})
    )
    up = subprocess.run(
        [sys.executable, "-m", "signoff", "dev", "up", "--detach", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert (state / ENV_FILE).is_file() and read_env_file(state / ENV_FILE)["SIGNOFF_KAFKA_BOOTSTRAP"]
    try:
        yield System(env, sink, work)
    finally:
        subprocess.run(
            [sys.executable, "-m", "signoff", "dev", "down", "--purge", "--state-dir", str(state)],
            capture_output=True,
            timeout=120,
            env=env,
            check=False,
        )
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_system() -> Iterator[System]:
    """One dev stack for the modules whose journeys cannot see each other's: each starts pipelines of its own
    names and reads gates, executions and notifications by their ids. Those modules are marked
    xdist_group(SHARED_STACK), so one worker runs them all on this stack (another would start one of its own)."""
    with running_system() as running:
        yield running


SHARED_STACK = "e2e-shared-stack"


@pytest.fixture(scope="module")
def system(shared_system: System) -> System:
    """The dev stack of a module's journeys: the shared one (a module that needs a stack of its own, say to count
    what happened on it, overrides this fixture with `running_system()`)."""
    return shared_system
