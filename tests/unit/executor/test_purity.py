"""The executor domain stays pure: no process, file, network, database or broker modules, no wall clock and no
global randomness, documented API. (The runner, the script launcher and the store do the I/O.)"""

from __future__ import annotations

import ast
import pathlib

import pytest

import signoff.executor.domain as domain
from tests.support.purity import imported_modules, undocumented

DOMAIN_DIR = pathlib.Path(domain.__file__).parent
MODULES = sorted(DOMAIN_DIR.glob("*.py"))
ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "difflib",  # the pipeline parser's "did you mean" (pure)
    "enum",
    "hashlib",
    "json",
    "pydantic",
    "re",
    "typing",
    "signoff",
}
ALLOWED_SIGNOFF = (
    "signoff.executor.domain",
    "signoff.catalog",  # the pure catalog model and its filters (the files are read by the service)
    "signoff.contracts.durations",
    # The shared kernel: the policy, approver inputs, decision and gate status it shares with the approval domain
    # (and the one approval rule it asks early, a quorum beyond the listed users).
    "signoff.kernel",
)


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_only_pure_imports(module: pathlib.Path) -> None:
    for name in imported_modules(ast.parse(module.read_text())):
        assert name.split(".")[0] in ALLOWED_IMPORTS, f"{module.name} imports {name}"
        if name.startswith("signoff"):
            assert name.startswith(ALLOWED_SIGNOFF), f"{module.name} imports {name}"


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_no_wall_clock_no_global_randomness_no_files(module: pathlib.Path) -> None:
    source = module.read_text()
    for forbidden in (
        "datetime.now",
        "utcnow",
        "time.time",
        "monotonic",
        ".today(",
        "import random",
        "uuid4",
        "open(",
        "read_text(",
        "read_bytes(",
    ):
        assert forbidden not in source, f"{module.name} uses {forbidden}"


def test_public_api_is_documented() -> None:
    assert undocumented(domain) == []
