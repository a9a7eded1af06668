"""The packages depend in one direction: the runtime (what every role runs on) imports only itself and the wire
contracts, never a role, the dev stack or the CLI; the executor and the notifier do not reach into the approval
service (the clock they share is the runtime's; the approval concepts they share, the shared kernel's, which imports
nothing of signoff)."""

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


@pytest.mark.parametrize("role", ["executor", "notifier"])
def test_other_roles_do_not_reach_into_the_approval_service(role: str):
    # What the executor shares with the approval service is the shared kernel's (`signoff.kernel`), not the
    # approval domain's: no exception list here.
    for module, name in _imports(role):
        assert not name.startswith("signoff.approval"), f"{role}/{module} imports {name}"


def test_the_shared_kernel_is_pure_and_imports_only_itself():
    for module, name in _imports("kernel"):
        assert name.startswith("signoff.kernel"), f"kernel/{module} imports {name}"
    stdlib = {"__future__", "collections", "dataclasses", "enum", "typing"}
    for path in sorted((PACKAGE / "kernel").rglob("*.py")):
        for name in imported_modules(ast.parse(path.read_text())):
            assert name.split(".")[0] in stdlib | {"signoff"}, f"kernel/{path.name} imports {name}"


@pytest.mark.parametrize("domain", ["executor/domain", "approval/domain"])
def test_the_domains_share_the_kernel_instead_of_remodelling_it(domain: str):
    # One model per concept: neither domain defines its own policy, rule, approver input, gate key or decision
    # status (the wire contract keeps its models: it is the published schema, mapped in each service's mapping.py).
    shared = {"ApprovalRule", "ApproverInput", "DecisionStatus", "GateKey", "GateStatus", "Policy", "TimeoutAction"}
    kernel_names = {"ApprovalPolicy", "ApprovalInput", *shared}
    for path in sorted((PACKAGE / domain).rglob("*.py")):
        if domain == "executor/domain" and path.name == "pipeline.py":
            # The pipeline document's parse models (camelCase YAML, defaults that are still expressions) keep
            # Harness's names for its blocks; the state machine turns them into the kernel's once, at dispatch.
            continue
        defined = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)}
        assert not defined & kernel_names, f"{domain}/{path.name} defines {sorted(defined & kernel_names)}"
