"""The shared approval concepts (see the package's docstring). Every type is immutable; constructors check shape (a
rule with nobody in it, a minimum count below one) and raise `InvalidDefinition`: such a definition is malformed
input, not a business refusal."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class InvalidDefinition(ValueError):
    """A value type, policy or gate was defined with values that cannot describe a working gate."""


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


def require_text(value: object, what: str) -> str:
    """`value` when it is a non-empty string; else `InvalidDefinition` naming `what`."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidDefinition(f"{what} must be a non-empty string, got {value!r}")
    return value


def _text_tuple(values: Iterable[str], what: str) -> tuple[str, ...]:
    # A bare string is iterable too; tuple("qa") would silently become ("q", "a").
    if isinstance(values, str):
        raise InvalidDefinition(f"{what} must be a list of strings, not the string {values!r}")
    return tuple(require_text(value, f"each of {what}") for value in values)


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
    """What an approver asks for: the one spelling of a decision from the approval service's votes to the executor's
    approval activities. (The wire spells these ``Approved`` / ``Rejected``, as CodePipeline does; each service's
    mapping module converts once. Harness's ``APPROVE`` in a pipeline expression is a rendering of this.)"""

    APPROVE = "approve"
    REJECT = "reject"


class TimeoutAction(enum.StrEnum):
    """What happens when a pending gate reaches its deadline. ``FAIL`` (expire; the pipeline fails) is the default."""

    FAIL = "fail"
    APPROVE = "approve"
    REJECT = "reject"


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
            require_text(getattr(self, name), f"GateKey.{name}")
        # bool is an int subclass; True as an attempt number is a bug upstream, not attempt 1.
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 0:
            raise InvalidDefinition(f"GateKey.attempt must be a non-negative integer, got {self.attempt!r}")

    def same_step(self, other: GateKey) -> bool:
        """True when ``other`` is a gate of the same pipeline step (any execution or attempt)."""
        return (self.pipeline, self.stage, self.step) == (other.pipeline, other.stage, other.step)

    def __str__(self) -> str:
        return f"{self.pipeline}/{self.execution}/{self.stage}/{self.step}#{self.attempt}"


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
        require_text(self.name, "ApproverInput.name")
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
