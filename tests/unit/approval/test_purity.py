"""The domain stays pure: only the standard library and itself, no I/O modules, no wall clock (the runtime's clock)."""

import ast
import pathlib

import pytest

import signoff.approval.domain as domain
from tests.support.purity import imported_modules, undocumented

DOMAIN_DIR = pathlib.Path(domain.__file__).parent
MODULES = sorted(DOMAIN_DIR.glob("*.py"))
ALLOWED_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "hashlib",
    "hmac",
    "itertools",
    "json",
    "secrets",
    "string",
    "typing",
    "signoff",
}


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_only_pure_imports(module):
    for name in imported_modules(ast.parse(module.read_text())):
        assert name.split(".")[0] in ALLOWED_IMPORTS, f"{module.name} imports {name}"
        if name.startswith("signoff"):
            # Itself, and the shared kernel of the concepts it shares with the executor.
            assert name.startswith(("signoff.approval.domain", "signoff.kernel")), f"{module.name} imports {name}"


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_no_wall_clock(module):
    source = module.read_text()
    for forbidden in ("datetime.now", "utcnow", "time.time", "monotonic", ".today("):
        assert forbidden not in source, f"{module.name} reads the wall clock ({forbidden})"


def test_public_api_is_documented():
    assert undocumented(domain) == []
