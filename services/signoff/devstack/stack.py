"""A broker and a PostgreSQL server started together, with an env file other processes read to find them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

from signoff.devstack.broker import EmbeddedBroker
from signoff.devstack.postgres import EmbeddedPostgres

ENV_FILE = "env"
PID_FILE = "supervisor.pid"
KEYS_FILE = "decision-keys.json"
# Settings of the env file that are secrets: `dev env` prints them (for eval), nothing else does.
SECRET_SETTINGS = frozenset({"SIGNOFF_CLI_DECISION_KEY"})


def default_state_dir() -> Path:
    """Where `signoff dev up` keeps its data: $SIGNOFF_HOME, else ./.signoff/dev (git-ignored)."""
    home = os.environ.get("SIGNOFF_HOME")
    return Path(home) / "dev" if home else Path.cwd() / ".signoff" / "dev"


def find_env_file(start: Path | None = None) -> Path | None:
    """The env file of a running dev stack in `start` or one of its parents (so commands run from a
    sub-folder find it too)."""
    if home := os.environ.get("SIGNOFF_HOME"):
        candidate = Path(home) / "dev" / ENV_FILE
        return candidate if candidate.is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / ".signoff" / "dev" / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the `signoff dev up` that owns `state_dir`, if it is still running."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return pid


def supervisor_alive(state_dir: Path) -> bool:
    return supervisor_pid(state_dir) is not None


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :]
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


class DevStack:
    """Broker + PostgreSQL under `state_dir`. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        state_dir: Path,
        *,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        fast: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.broker = EmbeddedBroker(state_dir / "broker", kafka_port)
        self.postgres = EmbeddedPostgres(state_dir / "postgres", postgres_port, fast=fast)

    def decision_keys(self) -> dict[str, str]:
        """Decision source -> HMAC key of this stack: random keys made at its first start and kept in the state
        dir (owner-only), never in code, so the CLI can sign decisions the approval role accepts."""
        path = self.state_dir / KEYS_FILE
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            keys = json.loads(path.read_text())
            if isinstance(keys, dict) and isinstance(keys.get("cli"), str) and keys["cli"]:
                return keys
        self.state_dir.mkdir(parents=True, exist_ok=True)
        keys = {"cli": secrets.token_urlsafe(32)}
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(keys))
        tmp.replace(path)
        return keys

    @property
    def env(self) -> dict[str, str]:
        """The settings that point signoff at this stack (and the CLI's decision key, for `signoff approve`)."""
        return {
            "SIGNOFF_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "SIGNOFF_DATABASE_URL": self.postgres.dsn("signoff"),
            # Tansu refuses idempotent producers; real Kafka keeps the default (on).
            "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "SIGNOFF_CLI_DECISION_KEY": self.decision_keys()["cli"],
        }

    @property
    def role_env(self) -> dict[str, str]:
        """What the service roles get besides `env`: the decision keys they verify signatures with."""
        return {"SIGNOFF_DECISION_KEYS": json.dumps(self.decision_keys())}

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.postgres.start()
            self.broker.start()
            self.postgres.ensure_database("signoff")
        except BaseException:
            self.stop()
            raise

    def write_env_file(self) -> Path:
        path = self.state_dir / ENV_FILE
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)  # it holds the CLI's decision key
        tmp.chmod(0o600)
        tmp.write_text("".join(f"export {key}={value}\n" for key, value in self.env.items()))
        tmp.replace(path)
        return path

    def remove_env_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / ENV_FILE).unlink()

    def stop(self) -> None:
        self.remove_env_file()
        self.broker.stop()
        self.postgres.stop()

    def remove(self) -> None:
        """Stop, then delete everything this stack keeps: `state_dir` and the PostgreSQL files kept outside it."""
        self.stop()
        self.postgres.remove()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
