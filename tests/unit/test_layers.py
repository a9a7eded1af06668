"""The packages depend in one direction: the runtime (what every role runs on) imports only itself and the wire
contracts, never a role, the dev stack or the CLI; the executor and the notifier do not reach into the approval
service (the clock they share is the runtime's)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import signoff
from tests.support.purity import imported_modules

PACKAGE = pathlib.Path(signoff.__file__).parent


def _imports(folder: str) -> list[tuple[str, str]]:
    return [
        (path.name, name)
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for name in imported_modules(ast.parse(path.read_text()))
        if name.startswith("signoff")
    ]


def test_the_runtime_imports_only_itself_and_the_contracts():
    for module, name in _imports("runtime"):
        # `signoff` itself: the package's version (tracing's resource attributes).
        assert name == "signoff" or name.startswith(("signoff.runtime", "signoff.contracts")), (
            f"runtime/{module} imports {name}"
        )


# The one approval rule the executor asks early, when it validates a pipeline (the same words as the approval
# service's refusal, from the same function).
SHARED_RULES = {"executor": {"signoff.approval.domain.requests"}, "notifier": set()}


@pytest.mark.parametrize("role", sorted(SHARED_RULES))
def test_other_roles_do_not_reach_into_the_approval_service(role: str):
    for module, name in _imports(role):
        if name.startswith("signoff.approval"):
            assert name in SHARED_RULES[role], f"{role}/{module} imports {name}"
