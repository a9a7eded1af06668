"""The packages depend in one direction: the runtime (what every role runs on) imports only itself and the wire
contracts, never a role, the dev stack or the CLI; the executor and the notifier do not reach into the approval
service (the clock they share is the runtime's; the approval concepts they share, the shared kernel's, which imports
nothing of signoff); and a concept the kernel owns is imported from the kernel, by every role and test, never through
the approval domain (which does not re-export it)."""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil

import pytest

import signoff
import signoff.approval.domain
import signoff.kernel
from tests.support.purity import imported_modules

PACKAGE = pathlib.Path(signoff.__file__).parent
TESTS = pathlib.Path(__file__).resolve().parents[1]
KERNEL_NAMES = frozenset(signoff.kernel.__all__)


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


def kernel_names_taken_from_approval(tree: ast.AST) -> list[str]:
    """Every kernel concept `tree` gets through a `signoff.approval` module: `from signoff.approval... import X`, or
    `module.X` on a name bound to such a module (`import signoff.approval.domain as domain`, `from
    signoff.approval.domain import model`)."""
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("signoff.approval"):
            for alias in node.names:
                if alias.name in KERNEL_NAMES:
                    found.append(f"{node.module}.{alias.name}")
                else:
                    modules.add(alias.asname or alias.name)  # may be a module (`model`); a class is harmless here
        elif isinstance(node, ast.Import):
            modules.update(
                alias.asname for alias in node.names if alias.asname and alias.name.startswith("signoff.approval")
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in KERNEL_NAMES:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            dotted = ast.unparse(node.value)
            if dotted.startswith("signoff.approval") or (isinstance(root, ast.Name) and root.id in modules):
                found.append(f"{dotted}.{node.attr}")
    return found


def _sources() -> list[pathlib.Path]:
    roles = [path for path in sorted(PACKAGE.rglob("*.py")) if "kernel" not in path.relative_to(PACKAGE).parts]
    tests = [path for path in sorted(TESTS.rglob("*.py")) if "node_modules" not in path.parts]
    return roles + tests


def test_kernel_concepts_are_imported_from_the_kernel_not_through_the_approval_domain():
    # One model per concept, one place to get it from: the api, the notifier, the CLI, the bench and the approval
    # service itself import `user_key`, `DecisionStatus`, `GateStatus`... from `signoff.kernel`.
    offenders = {
        str(path.relative_to(PACKAGE.parents[1])): names
        for path in _sources()
        if (names := kernel_names_taken_from_approval(ast.parse(path.read_text())))
    }
    assert offenders == {}


def test_the_check_sees_both_forms_of_taking_a_kernel_concept_through_the_approval_domain():
    taken = "from signoff.approval.domain.model import Member, user_key\nimport signoff.approval.domain as d\nd.GateKey"
    assert kernel_names_taken_from_approval(ast.parse(taken)) == [
        "signoff.approval.domain.model.user_key",
        "d.GateKey",
    ]
    own = "from signoff.approval.domain import Gate, model\nfrom signoff.kernel import user_key\nmodel.Member"
    assert kernel_names_taken_from_approval(ast.parse(own)) == []


def test_the_approval_domain_does_not_re_export_the_kernel():
    # Its surface is its own concepts (the gate aggregate, its events, members, votes); the shared ones are the
    # kernel's, so no caller is tempted to take them from here.
    package = signoff.approval.domain
    modules = [
        package,
        *(
            importlib.import_module(f"{package.__name__}.{info.name}")
            for info in pkgutil.iter_modules(package.__path__)
        ),
    ]
    for module in (module for module in modules if hasattr(module, "__all__")):
        assert not KERNEL_NAMES & set(module.__all__), (
            f"{module.__name__} re-exports {KERNEL_NAMES & set(module.__all__)}"
        )
