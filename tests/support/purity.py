"""For the purity tests of the domain packages: what a module imports."""

from __future__ import annotations

import ast


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module `tree` imports (`import a.b` -> `a.b`, `from a.b import c` -> `a.b`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
