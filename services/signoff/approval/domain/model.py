"""Value types of the approval domain: what a gate is about, who may decide it, and the rules that decide it.

Every type here is immutable. Constructors check shape (a rule with nobody in it, a minimum count below one) and raise
``InvalidDefinition``: such a definition is malformed input, not a business refusal.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from signoff.approval.domain.errors import InvalidDefinition


def user_key(user_id: str) -> str:
    """The form in which user ids are compared: surrounding blanks removed, case-folded.

    Why: the same person arriving as ``Alice`` from one source and ``alice`` from another must count once towards a
    quorum, and must not slip past the self-approval ban by changing case.
    """
    return user_id.strip().casefold()


def quorum_beyond_listed(user_groups: Sequence[str], users: Sequence[str], minimum_count: int) -> str | None:
    """Why a rule without user groups can never pass (its listed users, compared case-folded, are everyone who could
    approve, and there are fewer than `minimum_count`), or None. Needs no directory: pipeline validation asks it
    early, the approval service again (with the directory) in `refusal_reasons`."""
    if user_groups:
        return None
    listed = {user_key(user) for user in users}
    if minimum_count > len(listed):
        return f"minimumCount {minimum_count} exceeds the {len(listed)} listed user{'s' if len(listed) != 1 else ''}"
    return None


def require_aware(moment: datetime, what: str) -> None:
    """Refuse naive datetimes: a gate's deadline compared with a naive local time would be off by the UTC offset."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidDefinition(f"{what} must be a timezone-aware datetime, got {moment!r}")


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidDefinition(f"{what} must be a non-empty string, got {value!r}")
    return value


def _text_tuple(values: Iterable[str], what: str) -> tuple[str, ...]:
    # A bare string is iterable too; tuple("qa") would silently become ("q", "a").
    if isinstance(values, str):
        raise InvalidDefinition(f"{what} must be a list of strings, not the string {values!r}")
    return tuple(_require_text(value, f"each of {what}") for value in values)


class GateStatus(enum.StrEnum):
    """Where a gate is in its life. Every status but ``PENDING`` is final: nothing changes after it."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for every status a gate can never leave."""
        return self is not GateStatus.PENDING


class DecisionStatus(enum.StrEnum):
    """What an approver asks for. (CodePipeline spells these ``Approved`` / ``Rejected``; the service maps.)"""

    APPROVE = "approve"
    REJECT = "reject"


class TimeoutAction(enum.StrEnum):
    """What happens when a pending gate reaches its deadline. ``FAIL`` (expire; the pipeline fails) is the default."""

    FAIL = "fail"
    APPROVE = "approve"
    REJECT = "reject"


class OutcomeCause(enum.StrEnum):
    """Why a gate was approved or rejected: by votes, by its timeout action, or because a newer run superseded it."""

    VOTES = "votes"
    TIMEOUT = "timeout"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class GateKey:
    """The natural key of a gate. A repeated approval request with the same key is the same gate."""

    pipeline: str
    execution: str
    stage: str
    step: str
    attempt: int

    def __post_init__(self) -> None:
        for name in ("pipeline", "execution", "stage", "step"):
            _require_text(getattr(self, name), f"GateKey.{name}")
        # bool is an int subclass; True as an attempt number is a bug upstream, not attempt 1.
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 0:
            raise InvalidDefinition(f"GateKey.attempt must be a non-negative integer, got {self.attempt!r}")

    def same_step(self, other: GateKey) -> bool:
        """True when ``other`` is a gate of the same pipeline step (any execution or attempt)."""
        return (self.pipeline, self.stage, self.step) == (other.pipeline, other.stage, other.step)

    def __str__(self) -> str:
        return f"{self.pipeline}/{self.execution}/{self.stage}/{self.step}#{self.attempt}"


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


@dataclass(frozen=True)
class ApprovalRule:
    """One approvers block: listed users and user groups, of whom ``minimum_count`` unique people must approve.

    An approver counts for the rule if they are a listed user of it or a member of one of its groups.
    """

    user_groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    minimum_count: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_groups", _text_tuple(self.user_groups, "ApprovalRule.user_groups"))
        object.__setattr__(self, "users", _text_tuple(self.users, "ApprovalRule.users"))
        if isinstance(self.minimum_count, bool) or not isinstance(self.minimum_count, int) or self.minimum_count < 1:
            raise InvalidDefinition(f"ApprovalRule.minimum_count must be an integer >= 1, got {self.minimum_count!r}")
        if not self.user_groups and not self.users:
            raise InvalidDefinition("ApprovalRule needs at least one user group or user")
        # Without groups the listed users are the whole population, so the rule can be checked now rather than
        # discovered when the gate times out. With groups it depends on membership, checked when the gate opens.
        if problem := quorum_beyond_listed(self.user_groups, self.users, self.minimum_count):
            raise InvalidDefinition(f"ApprovalRule: {problem}")

    def user_keys(self) -> frozenset[str]:
        """The listed users in comparison form."""
        return frozenset(user_key(user) for user in self.users)


@dataclass(frozen=True)
class Policy:
    """Who may decide a gate. Every rule must pass for the gate to be approved (e.g. one of qa AND two of sre).

    ``disallow_pipeline_executor``: the person who ran the pipeline may not decide its gate (their decisions are
    refused with ``self_approval``), even if a rule lists them.
    """

    rules: tuple[ApprovalRule, ...]
    disallow_pipeline_executor: bool = False

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        if not rules:
            raise InvalidDefinition("Policy needs at least one approval rule")
        for rule in rules:
            if not isinstance(rule, ApprovalRule):
                raise InvalidDefinition(f"Policy.rules must hold ApprovalRule values, got {rule!r}")
        object.__setattr__(self, "rules", rules)

    @classmethod
    def from_approvers(
        cls,
        *,
        user_groups: Iterable[str] = (),
        users: Iterable[str] = (),
        minimum_count: int = 1,
        disallow_pipeline_executor: bool = False,
    ) -> Policy:
        """The policy of a Harness ``approvers`` block: a single rule."""
        rule = ApprovalRule(user_groups=tuple(user_groups), users=tuple(users), minimum_count=minimum_count)
        return cls(rules=(rule,), disallow_pipeline_executor=disallow_pipeline_executor)


def has_value(value: str | None) -> bool:
    """Whether an input value counts as provided.

    Why an empty string does not: approval forms submit every field, untouched ones blank. A blank must neither
    erase an earlier approver's value nor satisfy a required input.
    """
    return value is not None and value != ""


@dataclass(frozen=True)
class ApproverInput:
    """A variable approvers may set (Harness ``approverInputs``).

    ``default_value`` fills it when no approver sets it. ``required``: an approving vote is refused unless the input
    has a value from this vote, an earlier approver, or the default. ``allowed_values`` (``None`` or empty: any value)
    restricts what approvers may set.
    """

    name: str
    default_value: str | None = None
    required: bool = False
    allowed_values: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _require_text(self.name, "ApproverInput.name")
        if self.allowed_values is not None:
            if isinstance(self.allowed_values, str):
                raise InvalidDefinition(f"ApproverInput.allowed_values must be a list, not {self.allowed_values!r}")
            allowed = tuple(self.allowed_values)
            if not all(isinstance(value, str) for value in allowed):
                raise InvalidDefinition(f"ApproverInput.allowed_values must be strings, got {allowed!r}")
            # An empty list on the wire means "no restriction"; nothing-allowed would make the input unusable.
            object.__setattr__(self, "allowed_values", allowed or None)
        if has_value(self.default_value) and not self.allows(self.default_value):
            raise InvalidDefinition(
                f"ApproverInput {self.name!r}: default {self.default_value!r} is not one of its allowed values"
            )

    def allows(self, value: str | None) -> bool:
        """Whether ``value`` may be set. Not providing a value (``None`` or blank) is always allowed here."""
        if not has_value(value) or self.allowed_values is None:
            return True
        return value in self.allowed_values

    @property
    def has_default(self) -> bool:
        """Whether the default provides a value."""
        return has_value(self.default_value)


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
