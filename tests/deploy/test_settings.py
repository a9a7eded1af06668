"""The manifests and the code agree on settings and roles.

Settings are read from the code, not listed here: every `pydantic_settings.BaseSettings` subclass in any module of
the `signoff` package. Every variable a rendered container sets must be one of their settings; every setting is in
deploy/SETTINGS.md and set the way that table says; and each container's environment and secret files, loaded by
the settings classes themselves, give valid values (secret files under the names pydantic-settings looks for).
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import os
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic_settings import BaseSettings

import signoff
from tests.deploy.manifests import DEPLOY, REPO, Manifest, by_kind, container_env, mounted_files, pod_spec, workloads

ROLES = ("approval", "executor", "notifier", "api", "migrate")
SERVICES = ("approval", "executor", "notifier", "api")
SECRETS_DIR_VAR = "SIGNOFF_SECRETS_DIR"  # read by signoff.runtime.settings.load_settings, not a field
HOW = ("config", "env", "secret", "default", "client")
UNSET_IN_PODS = ("default", "client")  # never set by the manifests


@dataclass(frozen=True)
class Setting:
    env: str  # the variable, upper case
    owner: str  # module.Class
    required: bool
    secret: bool


@functools.cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every BaseSettings subclass defined in a module of the signoff package (importing all of them)."""
    found: dict[str, type[BaseSettings]] = {}
    failed = []
    for module_info in pkgutil.walk_packages(signoff.__path__, "signoff."):
        if module_info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # runs the CLI when imported
        try:
            module = importlib.import_module(module_info.name)
        except Exception as exc:  # report every module that cannot be imported, not just the first
            failed.append(f"{module_info.name}: {type(exc).__name__}: {exc}")
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseSettings) and cls is not BaseSettings and cls.__module__.startswith("signoff."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    assert not failed, "modules of signoff that do not import:\n" + "\n".join(failed)
    assert found, "no BaseSettings subclass found under signoff"
    return tuple(found[name] for name in sorted(found))


def _env_names(cls: type[BaseSettings], name: str) -> list[str]:
    field = cls.model_fields[name]
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [choice.upper() for choice in alias.choices if isinstance(choice, str)]
    return [(cls.model_config.get("env_prefix", "") + name).upper()]


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


@functools.cache
def settings() -> dict[str, Setting]:
    """variable -> Setting, over every settings class (a subclass repeating a field is the same setting)."""
    out: dict[str, Setting] = {}
    for cls in settings_classes():
        for name, field in cls.model_fields.items():
            for env in _env_names(cls, name):
                out.setdefault(
                    env,
                    Setting(
                        env, f"{cls.__module__}.{cls.__qualname__}", field.is_required(), _is_secret(field.annotation)
                    ),
                )
    return out


def test_load_settings_reads_the_secrets_dir(tmp_path: Path) -> None:
    """The path every role takes on Kubernetes: load_settings() with $SIGNOFF_SECRETS_DIR pointing at the mounted
    Secret files (named as the manifests name them) and no dev stack around."""
    from signoff.runtime.settings import load_settings

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "signoff_database_url").write_text("postgresql://signoff:from-the-file@db:5432/signoff\n")
    (secrets / "signoff_kafka_sasl_password").write_text("from-the-file")
    outside = {k: v for k, v in os.environ.items() if not k.upper().startswith("SIGNOFF_")}
    pod_env = {SECRETS_DIR_VAR: str(secrets), "SIGNOFF_HOME": str(tmp_path / "no-dev-stack")}
    with mock.patch.dict(os.environ, outside | pod_env, clear=True):
        loaded = load_settings()
    assert loaded.database_url.get_secret_value() == "postgresql://signoff:from-the-file@db:5432/signoff"
    assert loaded.kafka_sasl_password is not None and loaded.kafka_sasl_password.get_secret_value() == "from-the-file"


# ---- what the rendered containers set --------------------------------------------------------------------------


def role_of(workload: Manifest) -> str:
    return workload["metadata"]["name"].removeprefix("signoff-")


def test_containers_run_their_role(objects: list[Manifest]) -> None:
    roles = {}
    for workload in workloads(objects):
        (container,) = pod_spec(workload)["containers"]
        assert container.get("command") is None, "the image's ENTRYPOINT (signoff) runs; roles are args"
        roles[role_of(workload)] = container["args"]
    assert roles == {role: [role] for role in ROLES}


def secrets_dir_files(objects: list[Manifest], workload: Manifest) -> tuple[str | None, dict[str, tuple]]:
    spec = pod_spec(workload)
    (container,) = spec["containers"]
    secrets_dir = container_env(objects, container).get(SECRETS_DIR_VAR)
    return secrets_dir, (mounted_files(spec, container, secrets_dir) if secrets_dir else {})


def unknown_variables(objects: list[Manifest]) -> list[str]:
    """Variables a container sets that no settings class reads (a typo is silently ignored by pydantic-settings)."""
    known = set(settings()) | {SECRETS_DIR_VAR}
    return [
        f"{workload['metadata']['name']}: {var}"
        for workload in workloads(objects)
        for container in pod_spec(workload)["containers"]
        for var in sorted(set(container_env(objects, container)) - known)
    ]


def stray_secret_files(objects: list[Manifest]) -> list[str]:
    """A file in the secrets dir named like a variable must be a setting's secret file (pydantic-settings ignores
    any other name silently); any other file (a CA bundle) must be named by some variable's value."""
    problems = []
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        (container,) = pod_spec(workload)["containers"]
        env = container_env(objects, container)
        secrets_dir, files = secrets_dir_files(objects, workload)
        if not files:
            problems.append(f"{name}: no secret files in {SECRETS_DIR_VAR}")
        for file in files:
            if re.fullmatch(r"[a-z_][a-z0-9_]*", file):
                if file.upper() not in settings():
                    problems.append(f"{name}: {file} is no setting's secret file (they are named signoff_<setting>)")
            elif f"{secrets_dir}/{file}" not in env.values():
                problems.append(f"{name}: {file} is mounted but no variable points at it")
    return problems


def plain_secrets(objects: list[Manifest]) -> list[str]:
    """Secret settings given as literal values (env value or ConfigMap key) instead of files from Secrets."""
    secret_vars = {env for env, s in settings().items() if s.secret}
    problems = [
        f"{workload['metadata']['name']}: {var['name']}"
        for workload in workloads(objects)
        for container in pod_spec(workload)["containers"]
        for var in container.get("env", [])
        if var["name"] in secret_vars and "value" in var
    ]
    for config in by_kind(objects, "ConfigMap").values():
        problems += [f"ConfigMap {config['metadata']['name']}: {k}" for k in sorted(secret_vars & set(config["data"]))]
    return problems


def settings_refusals(objects: list[Manifest], role: str, scratch: Path) -> list[str]:
    """Load every settings class with exactly what the role's container gets: its environment, and its secret files
    (placeholder contents) in a secrets dir. Returns the values refused, and the secret files not picked up."""
    workload = next(w for w in workloads(objects) if role_of(w) == role)
    (container,) = pod_spec(workload)["containers"]
    env = {k: v for k, v in container_env(objects, container).items() if v is not None}
    _, files = secrets_dir_files(objects, workload)
    placeholders = {name: f"postgresql://signoff:placeholder-{name}@db:5432/signoff" for name in files}
    for name, value in placeholders.items():
        (scratch / name).write_text(value)
    problems = []
    outside = {k: v for k, v in os.environ.items() if not k.upper().startswith("SIGNOFF_")}
    with mock.patch.dict(os.environ, outside | env, clear=True):
        for cls in settings_classes():
            try:
                loaded = cls(_env_file=None, _secrets_dir=str(scratch))
            except ValidationError as exc:
                # A class for another role may miss that role's settings; a refused value is always wrong.
                problems += [f"{cls.__name__}: {e['loc']}: {e['msg']}" for e in exc.errors() if e["type"] != "missing"]
                continue
            for name in cls.model_fields:
                for env_name in _env_names(cls, name):
                    if env_name.lower() in placeholders:
                        value = getattr(loaded, name)
                        value = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                        if value != placeholders[env_name.lower()]:
                            problems.append(f"{cls.__name__}: {env_name} not read from its secret file")
    return problems


def test_every_variable_is_a_setting(objects: list[Manifest]) -> None:
    assert unknown_variables(objects) == []


def test_every_secret_file_is_a_setting(objects: list[Manifest]) -> None:
    assert stray_secret_files(objects) == []


def test_secrets_are_never_plain_values(objects: list[Manifest]) -> None:
    assert plain_secrets(objects) == []


@pytest.mark.parametrize("role", ROLES)
def test_settings_load_from_the_container(objects: list[Manifest], role: str, tmp_path: Path) -> None:
    assert settings_refusals(objects, role, tmp_path) == []


# ---- deploy/SETTINGS.md ----------------------------------------------------------------------------------------


def parse_settings_table(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """variable -> (how it is set, roles) from the table of deploy/SETTINGS.md."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`(SIGNOFF_[A-Z0-9_]+)`\s*\|\s*([a-z]+)\s*\|\s*([a-z, ]*)\|", line)
        if not match:
            continue
        env, how, roles = match.group(1), match.group(2), match.group(3).strip()
        assert how in HOW, f"SETTINGS.md: {env}: '{how}' is not one of {HOW}"
        assert env not in rows, f"SETTINGS.md lists {env} twice"
        groups = {"all": ROLES, "services": SERVICES, "": ()}
        expanded = groups[roles] if roles in groups else tuple(r.strip() for r in roles.split(","))
        assert set(expanded) <= set(ROLES), f"SETTINGS.md: {env}: unknown roles {roles}"
        assert (how in UNSET_IN_PODS) == (not expanded), f"SETTINGS.md: {env}: roles are for set variables only"
        rows[env] = (how, expanded)
    return rows


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    return parse_settings_table((DEPLOY / "SETTINGS.md").read_text())


def undocumented(table: dict[str, tuple[str, tuple[str, ...]]]) -> list[str]:
    """Settings missing from the table, rows for settings that no longer exist, unsafe `default` rows."""
    problems = [
        f"{env}: not in deploy/SETTINGS.md (set it in the manifests, or list it as `default` if the code's default "
        "is right on Kubernetes)"
        for env in sorted(set(settings()) - set(table))
    ]
    problems += [
        f"{env}: no settings class reads it" for env in sorted(set(table) - set(settings()) - {SECRETS_DIR_VAR})
    ]
    for env, (how, _) in table.items():
        setting = settings().get(env)
        if how == "default" and setting is not None and (setting.required or setting.secret):
            problems.append(f"{env}: documented as default, but it is {'a secret' if setting.secret else 'required'}")
    return problems


def set_otherwise_than_documented(objects: list[Manifest], table: dict[str, tuple[str, tuple[str, ...]]]) -> list[str]:
    (config,) = by_kind(objects, "ConfigMap").values()
    problems = []
    for env, (how, roles) in table.items():
        for workload in workloads(objects):
            role = role_of(workload)
            (container,) = pod_spec(workload)["containers"]
            _, files = secrets_dir_files(objects, workload)
            sources = {
                "config": env in config["data"] and env in container_env(objects, container),
                "env": env in {var["name"] for var in container.get("env", [])},
                "secret": env.lower() in files,
            }
            where = sorted(source for source, present in sources.items() if present)
            if role in roles and where != [how]:
                problems.append(f"{role}: {env} should be set by {how}, is set by {where or 'nothing'}")
            if how in UNSET_IN_PODS and where:
                problems.append(f"{role}: {env} is documented as {how} but set by {where}")
    return problems


def test_every_setting_is_documented() -> None:
    assert undocumented(documented()) == []


def test_settings_are_set_as_documented(objects: list[Manifest]) -> None:
    assert set_otherwise_than_documented(objects, documented()) == []


# ---- roles of the CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_role_is_a_command_of_the_cli(role: str) -> None:
    from signoff.cli.main import cli

    command = cli.commands.get(role)
    assert command is not None, f"`signoff {role}` is not registered on signoff.cli.main:cli ({sorted(cli.commands)})"
    required = [p.name for p in command.params if p.required and p.default is None]
    assert not required, f"`signoff {role}` requires {required}, which the manifests do not pass"


def test_the_image_runs_the_cli() -> None:
    """The Dockerfile's ENTRYPOINT is the console script the package installs."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("signoff") == "signoff.cli.main:main"
    assert 'ENTRYPOINT ["signoff"]' in (DEPLOY / "Dockerfile").read_text()


# ---- the checks above catch what they are for -----------------------------------------------------------------


def _container(objects: list[Manifest], name: str) -> Manifest:
    return by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]


def _config(objects: list[Manifest]) -> dict[str, str]:
    (config,) = by_kind(objects, "ConfigMap").values()
    return config["data"]


def _secret_items(objects: list[Manifest], name: str) -> list[Manifest]:
    volume = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["volumes"][0]
    return [item for source in volume["projected"]["sources"] for item in source["secret"]["items"]]


def test_a_misspelt_variable_is_caught(rendered: dict[str, list[Manifest]]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    _config(objects)["SIGNOFF_KAFKA_BOOTSTRAP_SERVERS"] = _config(objects).pop("SIGNOFF_KAFKA_BOOTSTRAP")
    assert "signoff-notifier: SIGNOFF_KAFKA_BOOTSTRAP_SERVERS" in unknown_variables(objects)
    assert "notifier: SIGNOFF_KAFKA_BOOTSTRAP should be set by config, is set by nothing" in (
        set_otherwise_than_documented(objects, documented())
    )


def test_a_secret_file_named_without_the_prefix_is_caught(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    """`database_url` (what the settings docstring once said) is silently ignored by pydantic-settings."""
    objects = copy.deepcopy(rendered["prod"])
    for item in _secret_items(objects, "signoff-executor"):
        if item["path"] == "signoff_database_url":
            item["path"] = "database_url"
    assert any(
        p.startswith("signoff-executor: database_url is no setting's secret file") for p in stray_secret_files(objects)
    )
    assert "executor: SIGNOFF_DATABASE_URL should be set by secret, is set by nothing" in (
        set_otherwise_than_documented(objects, documented())
    )


def test_an_invalid_value_is_caught(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    objects = copy.deepcopy(rendered["prod"])
    _config(objects)["SIGNOFF_KAFKA_SECURITY_PROTOCOL"] = "TLS"
    _container(objects, "signoff-approval")["env"].append({"name": "SIGNOFF_KAFKA_SESSION_TIMEOUT_MS", "value": "500"})
    refusals = settings_refusals(objects, "approval", tmp_path)
    assert any("kafka_security_protocol" in p for p in refusals), refusals
    assert any("kafka_session_timeout_ms" in p for p in refusals), refusals


def test_a_secret_as_a_plain_value_is_caught(rendered: dict[str, list[Manifest]]) -> None:
    objects = copy.deepcopy(rendered["dev"])
    _container(objects, "signoff-approval")["env"].append({"name": "SIGNOFF_DATABASE_URL", "value": "postgresql://x"})
    _config(objects)["SIGNOFF_KAFKA_SASL_PASSWORD"] = "hunter2"
    assert plain_secrets(objects) == [
        "signoff-approval: SIGNOFF_DATABASE_URL",
        f"ConfigMap {by_kind(objects, 'ConfigMap').popitem()[0]}: SIGNOFF_KAFKA_SASL_PASSWORD",
    ]


def test_a_default_that_the_manifests_set_is_caught(rendered: dict[str, list[Manifest]]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    _container(objects, "signoff-notifier")["env"].append({"name": "SIGNOFF_HTTP_HOST", "value": "127.0.0.1"})
    assert set_otherwise_than_documented(objects, documented()) == [
        "notifier: SIGNOFF_HTTP_HOST is documented as default but set by ['env']"
    ]


def test_gaps_in_the_settings_table_are_caught() -> None:
    text = (DEPLOY / "SETTINGS.md").read_text()
    without_log_level = "\n".join(line for line in text.splitlines() if "`SIGNOFF_LOG_LEVEL`" not in line)
    assert [p.split(":")[0] for p in undocumented(parse_settings_table(without_log_level))] == ["SIGNOFF_LOG_LEVEL"]
    stale = text + "| `SIGNOFF_KAFKA_BROKERS` | default | | gone |\n"
    assert undocumented(parse_settings_table(stale)) == ["SIGNOFF_KAFKA_BROKERS: no settings class reads it"]
    unsafe = text.replace("| `SIGNOFF_DATABASE_URL` | secret | all |", "| `SIGNOFF_DATABASE_URL` | default | |")
    assert undocumented(parse_settings_table(unsafe)) == [
        "SIGNOFF_DATABASE_URL: documented as default, but it is a secret"
    ]
