"""Value types of the approval domain: what a gate is about, who may decide it, and the rules that decide it.

The concepts the executor shares (a gate's key, the policy and its rules, approver inputs, decision and gate status,
the timeout action) are the shared kernel's (`signoff.kernel`), re-exported here for the domain's own modules.

Every type here is immutable. Constructors check shape (a rule with nobody in it, a minimum count below one) and raise
``InvalidDefinition``: such a definition is malformed input, not a business refusal.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from signoff.kernel.gates import (
    ApprovalRule,
    DecisionStatus,
    InvalidDefinition,
    user_key,
)
from signoff.kernel.gates import require_text as _require_text

__all__ = [
    "Approver",
    "Comment",
    "Directory",
    "Member",
    "OutcomeCause",
    "RuleProgress",
    "Vote",
    "counts_for",
    "require_aware",
]


def require_aware(moment: datetime, what: str) -> None:
    """Refuse naive datetimes: a gate's deadline compared with a naive local time would be off by the UTC offset."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidDefinition(f"{what} must be a timezone-aware datetime, got {moment!r}")


class OutcomeCause(enum.StrEnum):
    """Why a gate was approved or rejected: by votes, by its timeout action, or because a newer run superseded it."""

    VOTES = "votes"
    TIMEOUT = "timeout"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Member:
    """A person from the directory: a user id, and how to reach them.

    Identity is the user id alone (compared with ``user_key``); e-mail and chat handles are contact details. The
    service layer resolves a chat handle or e-mail to a user id before it reaches the domain.
    """

    user_id: str
    email: str | None = None
    chat_handles: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _require_text(self.user_id, "Member.user_id")
        # Copy so that a caller mutating its dict later cannot change a frozen value.
        object.__setattr__(self, "chat_handles", dict(self.chat_handles))

    @property
    def key(self) -> str:
        """The comparison form of the user id."""
        return user_key(self.user_id)


Approver: TypeAlias = Member
"""The person behind a decision. Same shape as a directory member; ``Approver(user_id="alice")`` is enough."""


class Directory:
    """Group membership resolved by the service when the gate opened: group name -> members.

    The gate keeps this snapshot, so eligibility is decided without I/O and does not shift while the gate is
    pending (someone added to a group after the request cannot approve it). Group names are compared exactly; a
    group missing from the mapping has no members.
    """

    __slots__ = ("_key_sets", "_members")

    def __init__(self, members_by_group: Mapping[str, Iterable[Member]] | None = None) -> None:
        members: dict[str, tuple[Member, ...]] = {}
        for group, group_members in (members_by_group or {}).items():
            _require_text(group, "group name")
            listed = tuple(group_members)
            for member in listed:
                if not isinstance(member, Member):
                    raise InvalidDefinition(f"members of group {group!r} must be Member values, got {member!r}")
            members[group] = listed
        self._members = members
        self._key_sets = {group: frozenset(member.key for member in listed) for group, listed in members.items()}

    @property
    def members_by_group(self) -> dict[str, tuple[Member, ...]]:
        """The snapshot, for the repository to persist alongside the gate."""
        return dict(self._members)

    def members_of(self, group: str) -> tuple[Member, ...]:
        """Members of ``group`` at open time; empty if the group was not resolved."""
        return self._members.get(group, ())

    def is_member(self, user_id: str, group: str) -> bool:
        """Whether ``user_id`` belonged to ``group`` when the gate opened."""
        return user_key(user_id) in self._key_sets.get(group, frozenset())

    def email_of(self, user_id: str) -> str | None:
        """The e-mail the snapshot lists for ``user_id`` (in any group), or None."""
        key = user_key(user_id)
        for members in self._members.values():
            for member in members:
                if member.key == key and member.email:
                    return member.email
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Directory) and self._members == other._members

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping inside; equality only

    def __repr__(self) -> str:
        return f"Directory({self._members!r})"


def counts_for(rule: ApprovalRule, user_id: str, directory: Directory) -> bool:
    """Whether an approval by ``user_id`` counts towards ``rule``: a listed user or a member of one of its groups."""
    if user_key(user_id) in rule.user_keys():
        return True
    return any(directory.is_member(user_id, group) for group in rule.user_groups)


@dataclass(frozen=True)
class Vote:
    """An accepted decision. The latest vote of an approver replaces their earlier ones while the gate is pending.

    ``at`` is when the service counted it (its clock); ``source`` (the decision source that vouched for it) and
    ``decided_at`` (the time the sender gave) are the decision's own, published with every vote.
    """

    decision_id: str
    approver: Approver
    status: DecisionStatus
    comment: str
    inputs: dict[str, str]
    at: datetime
    source: str
    decided_at: datetime


@dataclass(frozen=True)
class Comment:
    """An approver's comment as carried by an outcome."""

    user_id: str
    status: DecisionStatus
    text: str
    at: datetime


@dataclass(frozen=True)
class RuleProgress:
    """How far one rule of a policy is: who counted for it so far, out of how many needed."""

    rule_index: int
    minimum_count: int
    approved_by: tuple[str, ...]

    @property
    def satisfied(self) -> bool:
        """Whether enough unique approvers approved for this rule."""
        return len(self.approved_by) >= self.minimum_count

    @property
    def remaining(self) -> int:
        """Approvals still missing for this rule (0 when satisfied)."""
        return max(0, self.minimum_count - len(self.approved_by))
