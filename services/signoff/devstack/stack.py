"""A broker and a PostgreSQL server started together, with an env file other processes read to find them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

from cryptography.fernet import Fernet

from signoff.devstack.broker import EmbeddedBroker
from signoff.devstack.postgres import EmbeddedPostgres
from signoff.devstack.process import ensure_port_free, free_port
from signoff.runtime.devenv import DEV_STATE_DIR_VARIABLE, ENV_FILE

KEYS_FILE = "decision-keys.json"
DECISION_SOURCES = ("api", "slack")
"""The decision sources the api role signs for: the JSON API and the pages (`api`), Slack's buttons (`slack`)."""
CREDENTIALS_KEY_FILE = "api-credentials.key"
SESSION_SECRET_FILE = "session-secret"  # noqa: S105 (a file name, not a secret)


def default_state_dir() -> Path:
    """Where `signoff dev up` keeps its data: $SIGNOFF_DEV_STATE_DIR (which `dev env` exports, so a shell that
    evaluated it finds the stack from any folder), else $SIGNOFF_HOME/dev, else ./.signoff/dev (git-ignored)."""
    if state_dir := os.environ.get(DEV_STATE_DIR_VARIABLE):
        return Path(state_dir)
    home = os.environ.get("SIGNOFF_HOME")
    return Path(home) / "dev" if home else Path.cwd() / ".signoff" / "dev"


class DevStack:
    """Broker + PostgreSQL under `state_dir`. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        state_dir: Path,
        *,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        api_port: int | None = None,
        fast: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.broker = EmbeddedBroker(state_dir / "broker", kafka_port)
        self.postgres = EmbeddedPostgres(state_dir / "postgres", postgres_port, fast=fast)
        self.requested_api_port = api_port
        self.api_port = api_port or free_port()

    def decision_keys(self) -> dict[str, str]:
        """Decision source -> HMAC key of this stack: a random key for each source the api role signs for (`api`,
        and `slack` for decisions made in Slack), made at the stack's first start and kept in the state dir
        (owner-only), never in code. Only the roles get them: clients hold none."""
        path = self.state_dir / KEYS_FILE
        kept: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                kept = {k: v for k, v in loaded.items() if k in DECISION_SOURCES and isinstance(v, str) and v}
        keys = {source: kept.get(source) or secrets.token_urlsafe(32) for source in DECISION_SOURCES}
        if keys != kept:
            self._keep(path, json.dumps(keys))
        return keys

    def session_secret(self) -> str:
        """The key the api signs the pages' session cookies with: random, made at the stack's first start and kept
        in the state dir (owner-only) like the decision keys, so a sign-in survives a restart of the stack."""
        path = self.state_dir / SESSION_SECRET_FILE
        with contextlib.suppress(FileNotFoundError):
            kept = path.read_text().strip()
            if len(kept) >= 32:
                return kept
        secret = secrets.token_urlsafe(48)
        self._keep(path, secret)
        return secret

    def _keep(self, path: Path, text: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(text)
        tmp.replace(path)

    def credentials_key(self) -> str:
        """The Fernet key the api encrypts access keys' secrets with: random, made at the stack's first start and
        kept in the state dir (owner-only), like the decision keys. `signoff dev access-key` reads it there."""
        path = self.state_dir / CREDENTIALS_KEY_FILE
        with contextlib.suppress(FileNotFoundError):
            key = path.read_text().strip()
            if key:
                return key
        key = Fernet.generate_key().decode()
        self._keep(path, key)
        return key

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        """The settings that point signoff at this stack: the API for clients, the broker and database for the
        roles and the admin commands (`migrate`, `groups`, `tokens`, `dev token`). No secret."""
        return {
            DEV_STATE_DIR_VARIABLE: str(self.state_dir.absolute()),
            "SIGNOFF_API_URL": self.api_url,
            "SIGNOFF_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "SIGNOFF_DATABASE_URL": self.postgres.dsn("signoff"),
            # Tansu refuses idempotent producers; real Kafka keeps the default (on).
            "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": "false",
        }

    @property
    def role_env(self) -> dict[str, str]:
        """What the service roles get besides `env`: the api's decision key (the approval role verifies what the
        api signs with it), its credentials key (access keys' secrets), its session key, the api's port, and the dev
        conveniences (`signoff dev token`, the pages' dev sign-in)."""
        keys = self.decision_keys()
        return {
            "SIGNOFF_DECISION_KEYS": json.dumps(keys),
            "SIGNOFF_API_DECISION_KEY": keys["api"],
            # Slack's buttons stay off until the operator gives the api a signing secret and a bot token.
            "SIGNOFF_SLACK_DECISION_KEY": keys["slack"],
            "SIGNOFF_API_CREDENTIALS_KEY": self.credentials_key(),
            "SIGNOFF_API_PORT": str(self.api_port),
            "SIGNOFF_API_HOST": "127.0.0.1",
            "SIGNOFF_API_DEV_MODE": "true",
            "SIGNOFF_API_SESSION_SECRET": self.session_secret(),
            "SIGNOFF_APPROVAL_PAGE_URL": self.api_url,
        }

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.requested_api_port:
            ensure_port_free(self.requested_api_port, "api")  # before anything starts, as for the other two
        try:
            # The broker boots while PostgreSQL initialises and starts (both are our children: launched from this
            # thread, which lives as long as we do, see die_with_parent).
            self.broker.launch()
            self.postgres.start()
            self.broker.wait_ready()
            self.postgres.ensure_database("signoff")
        except BaseException:
            self.stop()
            raise

    def write_env_file(self) -> Path:
        path = self.state_dir / ENV_FILE
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)  # owner-only, like everything of the stack
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
