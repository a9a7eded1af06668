"""schemas/asyncapi.yaml passes the official AsyncAPI parser (@asyncapi/parser, pinned in tests/asyncapi/), besides
the drift check: its schema, its $refs to the event schemas beside it, and the operations' channel and message refs.

`.ci/run` installs the parser (`npm ci`); run alone, this test installs it the same way on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import REPO

CHECKER = REPO / "tests" / "asyncapi"
SCHEMAS = REPO / "schemas"
# One worker runs these: an `npm ci` of the fixture must not race another in the same folder.
pytestmark = pytest.mark.xdist_group("asyncapi-parser")


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed to run the AsyncAPI parser"
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=CHECKER, check=True, timeout=600)
    return node


def parse(node: str, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CHECKER / "validate.mjs"), str(document)], capture_output=True, text=True, timeout=120
    )


def test_the_committed_document_is_valid(node: str) -> None:
    result = parse(node, SCHEMAS / "asyncapi.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith(f"{len(document['channels'])} channels, {len(document['operations'])} operations")
    assert not [line for line in result.stdout.splitlines() if line.startswith(("error", "warning"))]


@pytest.mark.parametrize(
    ("what", "mutate", "expected"),
    [
        (
            "an operation on no channel",
            lambda d: next(iter(d["operations"].values()))["channel"].update({"$ref": "#/channels/nowhere"}),
            "nowhere",
        ),
        ("an unknown action", lambda d: next(iter(d["operations"].values())).update(action="publish"), "action"),
        ("a missing event schema", lambda d: None, "ENOENT"),
    ],
)
def test_the_parser_refuses_a_broken_document(node: str, tmp_path: Path, what: str, mutate, expected: str) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, copy)
    document = yaml.safe_load((copy / "asyncapi.yaml").read_text())
    mutate(document)
    if what == "a missing event schema":
        (copy / "io.signoff.gate.opened.v1.json").unlink()
    (copy / "asyncapi.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = parse(node, copy / "asyncapi.yaml")
    assert result.returncode == 1, result.stdout
    assert "is not a valid AsyncAPI document" in result.stderr
    assert any(line.startswith("error: ") and expected in line for line in result.stdout.splitlines()), result.stdout
