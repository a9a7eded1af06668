"""The dev stack's per-stack decision key: random at first start, kept in the state dir, handed to the roles only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from signoff.api.access_keys import SecretBox
from signoff.cli.dev import _example_env
from signoff.devstack import DevStack
from signoff.devstack.stack import CREDENTIALS_KEY_FILE, KEYS_FILE, SESSION_SECRET_FILE


def test_keys_are_random_per_stack_and_stable(tmp_path: Path) -> None:
    first = DevStack(tmp_path / "a")
    keys = first.decision_keys()
    assert len(keys["api"]) >= 32
    assert DevStack(tmp_path / "a").decision_keys() == keys
    assert DevStack(tmp_path / "b").decision_keys() != keys
    assert stat.S_IMODE((tmp_path / "a" / KEYS_FILE).stat().st_mode) == 0o600


def test_the_api_and_the_approval_role_share_the_key_and_clients_get_none(tmp_path: Path) -> None:
    stack = DevStack(tmp_path)
    api_key = stack.role_env["SIGNOFF_API_DECISION_KEY"]
    slack_key = stack.role_env["SIGNOFF_SLACK_DECISION_KEY"]
    assert json.loads(stack.role_env["SIGNOFF_DECISION_KEYS"]) == {"api": api_key, "slack": slack_key}
    assert api_key != slack_key and len(slack_key) >= 32
    assert api_key not in "".join(stack.env.values()) and slack_key not in "".join(stack.env.values())
    assert stack.env["SIGNOFF_API_URL"] == f"http://127.0.0.1:{stack.api_port}"


def test_a_stack_made_before_slack_keeps_its_api_key_and_gets_a_slack_key(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text(json.dumps({"api": "an-older-stacks-api-key-of-enough-length"}))
    keys = DevStack(tmp_path).decision_keys()
    assert keys["api"] == "an-older-stacks-api-key-of-enough-length" and len(keys["slack"]) >= 32
    assert DevStack(tmp_path).decision_keys() == keys


def test_the_example_directory_is_used_when_none_is_set(monkeypatch) -> None:
    monkeypatch.delenv("SIGNOFF_DIRECTORY_FILE", raising=False)
    path = Path(_example_env("SIGNOFF_DIRECTORY_FILE", "directory.yaml")["SIGNOFF_DIRECTORY_FILE"])
    assert path.name == "directory.yaml" and "docs:" in path.read_text()
    monkeypatch.setenv("SIGNOFF_DIRECTORY_FILE", "/elsewhere.yaml")
    assert _example_env("SIGNOFF_DIRECTORY_FILE", "directory.yaml") == {}


def test_the_credentials_key_is_a_random_fernet_key_per_stack_for_the_api_only(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "a")
    key = stack.role_env["SIGNOFF_API_CREDENTIALS_KEY"]
    box = SecretBox.from_key(key)
    assert box.open(box.seal("secret")) == "secret"
    assert DevStack(tmp_path / "a").credentials_key() == key != DevStack(tmp_path / "b").credentials_key()
    assert stat.S_IMODE((tmp_path / "a" / CREDENTIALS_KEY_FILE).stat().st_mode) == 0o600
    assert key not in "".join(stack.env.values())


def test_the_pages_session_key_is_random_per_stack_kept_owner_only_and_only_the_roles_get_it(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "a")
    secret = stack.role_env["SIGNOFF_API_SESSION_SECRET"]
    assert len(secret) >= 32 and stack.role_env["SIGNOFF_API_DEV_MODE"] == "true"
    assert DevStack(tmp_path / "a").session_secret() == secret
    assert DevStack(tmp_path / "b").session_secret() != secret
    assert stat.S_IMODE((tmp_path / "a" / SESSION_SECRET_FILE).stat().st_mode) == 0o600
    assert secret not in "".join(stack.env.values())
