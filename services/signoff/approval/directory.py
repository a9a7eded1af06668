"""The approvers' directory file (`groups: {GROUP: [{user, email, slack, teams}]}`), read by the approval role at
startup and by `signoff groups load`: a module of its own, so the command does not import the role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_directory(path: Path) -> list[tuple[str, str, str | None, dict[str, str]]]:
    """Directory members from YAML: `{groups: {GROUP: [{user, email, slack, teams}, ...]}}` (or the groups
    mapping at the top level)."""
    document: Any = yaml.safe_load(path.read_text()) or {}
    groups = document.get("groups", document) if isinstance(document, dict) else None
    if not isinstance(groups, dict):
        raise ValueError(f"{path}: expected a mapping of user groups to member lists")
    members = []
    for group, listed in groups.items():
        for entry in listed or []:
            if isinstance(entry, str):
                entry = {"user": entry}
            user = entry.get("user") or entry.get("user_id")
            if not user:
                raise ValueError(f"{path}: a member of group {group!r} has no user")
            handles = {name: str(entry[name]) for name in ("slack", "teams") if entry.get(name)}
            members.append((str(group), str(user), entry.get("email"), handles))
    return members
