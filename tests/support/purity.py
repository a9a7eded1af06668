"""For the purity tests of the domain packages: what a module imports."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module `tree` imports (`import a.b` -> `a.b`, `from a.b import c` -> `a.b`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def undocumented(package: ModuleType) -> list[str]:
    """The public classes, their public methods and the functions `package.__all__` exports without a docstring."""
    missing = []
    for name in package.__all__:
        value = getattr(package, name)
        if isinstance(value, type):
            if not value.__doc__:
                missing.append(name)
            missing += [
                f"{name}.{attribute}"
                for attribute, member in vars(value).items()
                if callable(member) and not attribute.startswith("_") and not member.__doc__
            ]
        elif inspect.isfunction(value) and not value.__doc__:
            missing.append(name)
    return missing
