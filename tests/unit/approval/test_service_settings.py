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


def test_a_secret_file_wins_over_the_dev_stacks_env_file_and_the_environment_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGNOFF_DATABASE_URL", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "signoff_database_url").write_text("postgresql://from-the-secret@db/signoff")
    env_file = tmp_path / "dev.env"
    env_file.write_text("SIGNOFF_DATABASE_URL=postgresql://from-the-dev-stack@db/signoff\n")

    def url() -> str:
        settings = ApprovalSettings(_env_file=env_file, _secrets_dir=str(secrets))
        return settings.database_url.get_secret_value()

    assert url() == "postgresql://from-the-secret@db/signoff"
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", "postgresql://from-the-environment@db/signoff")
    assert url() == "postgresql://from-the-environment@db/signoff"


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


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "expected a mapping of user groups"),
        ("[]", "expected a mapping of user groups"),
        ("{}", "lists no members"),
        ("groups: {docs: []}", "lists no members"),
        ("grups: {docs: [dana]}", "grups: Input should be a valid list"),  # a typo is not a group named grups
        ("groups: {docs: [dana]}\nextra: 1", "unknown key(s) beside `groups`: extra"),
        ("groups: {docs: [' bob']}", "groups.docs.0: String should match pattern"),
        ("groups: {'a b': [dana]}", "groups.a b: String should match pattern"),
        ("groups: {docs: [{user: dana, slak: U1}]}", "groups.docs.0.slak: Extra inputs are not permitted"),
        ("groups: {docs: [{email: dana@example.com}]}", "groups.docs.0.user: Field required"),
        ("groups: {docs: [{user: dana, email: dana}]}", "groups.docs.0.email: String should match pattern"),
        ("groups: {docs: [[dana]]}", "groups.docs.0: a member is a user id or a mapping with `user`"),
    ],
)
def test_read_directory_refuses_what_would_empty_or_garble_the_directory(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"directory\.yaml: ") as refused:
        read_directory(path)
    assert error in str(refused.value) and "\n" not in str(refused.value)


def test_read_directory_takes_ids_handles_and_the_legacy_user_id_key(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("docs: [dana, {user_id: eli, slack: 123}]\nqa:\n")
    assert read_directory(path) == [("docs", "dana", None, {}), ("docs", "eli", None, {"slack": "123"})]
