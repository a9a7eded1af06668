"""The approvers' directory file (`groups: {GROUP: [{user, email, slack, teams}]}`), read by the approval role at
startup and by `signoff groups load`: a module of its own, so the command does not import the role."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from signoff.catalog.yamldoc import read_yaml
from signoff.contracts.base import Email, Identifier

_T = TypeVar("_T")


class _Member(BaseModel):
    # Unknown keys are refused: a misspelt `slak:` would otherwise drop the handle without a word.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    user: Identifier = Field(validation_alias=AliasChoices("user", "user_id"))
    email: Email | None = None
    slack: str | None = None
    teams: str | None = None


_GROUPS = TypeAdapter(dict[Identifier, list[Any] | None])
_USER = TypeAdapter(Identifier)


def read_directory(path: Path) -> list[tuple[str, str, str | None, dict[str, str]]]:
    """Directory members from YAML: `{groups: {GROUP: [{user, email, slack, teams}, ...]}}` (or the groups
    mapping at the top level; a member may be just its user id). ValueError, one line naming the place, for a file
    that is not such a document, a user id or group name the wire contract refuses (no whitespace, no `/`), an
    unknown key, or a file that lists nobody: replacing the directory with that would leave every pending gate
    without approvers (an empty file or `[]` is far more often a mistake than a wish)."""
    document: Any = read_yaml(path)  # strict: a repeated key or an alias bomb is refused, with line and column
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of user groups to member lists (`groups: {{GROUP: [USER]}}`)")
    groups, where = document, ""
    if "groups" in document:
        if len(document) > 1:
            others = ", ".join(sorted(str(key) for key in document if key != "groups"))
            raise ValueError(f"{path}: unknown key(s) beside `groups`: {others}")
        groups, where = document["groups"], "groups."
    members = []
    for group, entries in _checked(path, where, lambda: _GROUPS.validate_python(groups)).items():
        for index, entry in enumerate(entries or []):
            place = f"{where}{group}.{index}"
            if isinstance(entry, dict):
                member = _checked(path, place + ".", lambda entry=entry: _Member.model_validate(entry))
            elif isinstance(entry, str):
                member = _Member(user=_checked(path, place, lambda entry=entry: _USER.validate_python(entry)))
            else:
                raise ValueError(f"{path}: {place}: a member is a user id or a mapping with `user`")
            handles = {name: value for name in ("slack", "teams") if (value := getattr(member, name))}
            members.append((group, member.user, member.email, handles))
    if not members:
        raise ValueError(f"{path}: lists no members: refusing a directory in which nobody may approve anything")
    return members


def _checked(path: Path, where: str, validate: Callable[[], _T]) -> _T:
    """`validate()`, its first ValidationError as one line naming the place in the file."""
    try:
        return validate()
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"] if part != "[key]")
        raise ValueError(f"{path}: {where}{place}: {first['msg']}".replace(": : ", ": ")) from None
