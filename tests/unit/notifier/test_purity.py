"""The notifier domain stays pure: no network, mail, database or broker modules, no wall clock, documented API."""

from __future__ import annotations

import ast
import pathlib

import pytest

import signoff.notifier.domain as domain
from tests.support.purity import imported_modules, undocumented

DOMAIN_DIR = pathlib.Path(domain.__file__).parent
MODULES = sorted(DOMAIN_DIR.glob("*.py"))
ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "hashlib",
    "html",
    "json",
    "pydantic",
    "re",
    "typing",
    "urllib.parse",
    "weakref",  # per-catalog memos (view.py): no I/O
    "signoff",
}


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_only_pure_imports(module: pathlib.Path) -> None:
    for name in imported_modules(ast.parse(module.read_text())):
        assert name in ALLOWED_IMPORTS or name.split(".")[0] in ALLOWED_IMPORTS - {"urllib.parse"}, (
            f"{module.name} imports {name}"
        )
        if name.startswith("signoff"):
            assert name.startswith(("signoff.notifier.domain", "signoff.contracts", "signoff.catalog")), name


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_no_wall_clock_and_no_global_randomness(module: pathlib.Path) -> None:
    source = module.read_text()
    for forbidden in ("datetime.now", "utcnow", "time.time", "monotonic", ".today(", "import random", "uuid4"):
        assert forbidden not in source, f"{module.name} uses {forbidden}"


def test_public_api_is_documented() -> None:
    assert undocumented(domain) == []
