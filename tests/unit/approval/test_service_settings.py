"""ApprovalSettings (decision keys, timeouts) and the directory YAML reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from signoff.approval.directory import read_directory
from signoff.approval.settings import ApprovalSettings


def test_decision_keys_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_DECISION_KEYS", '{"cli": "k1", "slack": "k2"}')
    settings = ApprovalSettings(_env_file=None)
    assert settings.decision_key("cli") == b"k1"
    assert settings.decision_key("slack") == b"k2"
    assert settings.decision_key("web") is None
    assert "k1" not in repr(settings)


def test_decision_keys_from_a_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNOFF_DECISION_KEYS", raising=False)
    (tmp_path / "signoff_decision_keys").write_text('{"cli": "from-file"}')
    settings = ApprovalSettings(_env_file=None, _secrets_dir=str(tmp_path))
    assert settings.decision_key("cli") == b"from-file"


def test_malformed_decision_keys_are_refused_without_echoing_them() -> None:
    settings = ApprovalSettings(_env_file=None, decision_keys="not json hunter2")
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        settings.decision_key_map()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="JSON object"):
        ApprovalSettings(_env_file=None, decision_keys='{"cli": ""}').decision_key_map()


def test_timeouts() -> None:
    settings = ApprovalSettings(_env_file=None, default_timeout="2h", max_timeout="7d")
    assert settings.default_timeout_span.total_seconds() == 7200
    assert settings.max_timeout_span.days == 7
    with pytest.raises(ValidationError):
        ApprovalSettings(_env_file=None, max_timeout="soon")


def test_read_directory(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        "groups:\n"
        "  sre:\n"
        "    - {user: bob, email: bob@example.com, slack: U1, teams: bob@corp}\n"
        "    - carol\n"
        "  qa:\n"
        "    - {user: erin}\n"
    )
    assert read_directory(path) == [
        ("sre", "bob", "bob@example.com", {"slack": "U1", "teams": "bob@corp"}),
        ("sre", "carol", None, {}),
        ("qa", "erin", None, {}),
    ]
    path.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="mapping"):
        read_directory(path)
