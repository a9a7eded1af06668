"""Whether the approval service can serve a request at all: the one place these rules live.

A request nobody could ever approve (an unknown user group or user, a quorum larger than the people eligible, the
same user listed twice under different case), one whose timeout action cannot complete it (auto-approve with a
required input that has no default) or one asking to wait longer than the service allows is refused when its gate
would open, with the reasons by field of the request. The approval service publishes them (RequestRefused) so the
pipeline fails at once instead of waiting for a gate nobody can decide. Other layers (the executor's validation,
`signoff run`) may ask the same function early; the approval service decides.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from signoff.approval.domain.model import Member
from signoff.kernel import ApproverInput, TimeoutAction, user_key

__all__ = ["RequestedRule", "refusal_reasons"]


@dataclass(frozen=True)
class RequestedRule:
    """One approvers block of a request as sent: `field` says where it is in the request (`policy`,
    `policy.rules[0]`), so a reason can name the field to fix."""

    field: str
    user_groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    minimum_count: int = 1


LISTED_AT_MOST = 20
"""Names a reason lists before `and N more`: a reason travels in a RequestRefused field of at most 4,096 characters
(and is read by a person); a request naming hundreds of unknown groups would not fit, and its refusal not be sent."""


def _listed(names: Sequence[str], separator: str = ", ") -> str:
    """The first LISTED_AT_MOST of `names` joined, then `and N more`."""
    shown = list(names[:LISTED_AT_MOST])
    if len(names) > len(shown):
        shown.append(f"and {len(names) - len(shown)} more")
    return separator.join(shown)


def _duration(value: timedelta) -> str:
    # The domain imports nothing from contracts: a plain `1d2h` / `45m` / `30s` form for messages.
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def refusal_reasons(
    rules: Sequence[RequestedRule],
    *,
    directory: Mapping[str, Iterable[Member]],
    known_users: Collection[str],
    disallow_pipeline_executor: bool,
    pipeline_executor: str | None,
    inputs: Sequence[ApproverInput],
    timeout_action: TimeoutAction,
    requested_timeout: timedelta | None,
    maximum_timeout: timedelta,
) -> dict[str, str]:
    """Why the request cannot be served, by field; empty when it can.

    `directory`: the members of every user group the directory knows among those the rules name (a group absent
    from it is unknown). `known_users`: the user keys (`user_key`) of every user in the directory. User ids are
    compared case-folded everywhere (`user_key`), as votes are.
    """
    reasons: dict[str, str] = {}
    known = {user_key(user) for user in known_users}
    executor = user_key(pipeline_executor) if pipeline_executor else None
    for rule in rules:
        unknown_groups = [group for group in rule.user_groups if group not in directory]
        if unknown_groups:
            listed = _listed([repr(group) for group in unknown_groups])
            reasons[f"{rule.field}.user_groups"] = (
                f"unknown user group{'s' if len(unknown_groups) > 1 else ''} {listed}"
            )
        by_key: dict[str, list[str]] = {}
        for user in rule.users:
            by_key.setdefault(user_key(user), []).append(user)
        problems = []
        same = [spellings for spellings in by_key.values() if len(spellings) > 1]
        if same:
            problems.append(
                _listed([" and ".join(repr(s) for s in spellings) + " are the same user" for spellings in same], "; ")
            )
        unknown_users = [spellings[0] for key, spellings in by_key.items() if key not in known]
        if unknown_users:
            problems.append(
                f"unknown user{'s' if len(unknown_users) > 1 else ''} " + _listed([repr(u) for u in unknown_users])
            )
        if problems:
            reasons[f"{rule.field}.users"] = "; ".join(problems)
        eligible = {key for key in by_key if key in known}
        for group in rule.user_groups:
            eligible.update(user_key(member.user_id) for member in directory.get(group, ()))
        if disallow_pipeline_executor and executor is not None:
            eligible.discard(executor)
        if rule.minimum_count > len(eligible):
            note = " (the pipeline executor may not approve)" if disallow_pipeline_executor and executor else ""
            reasons[f"{rule.field}.minimum_count"] = (
                f"{rule.minimum_count} approvals needed but only {len(eligible)} eligible "
                f"{'person' if len(eligible) == 1 else 'people'}{note}"
            )
    if timeout_action is TimeoutAction.APPROVE:
        unfillable = [item.name for item in inputs if item.required and not item.has_default]
        if unfillable:
            reasons["approver_inputs"] = (
                f"timeout action 'approve' needs a default for required input(s): {_listed(unfillable)}"
            )
    if requested_timeout is not None:
        if requested_timeout <= timedelta(0):
            reasons["timeout"] = "must be a positive duration"
        elif requested_timeout > maximum_timeout:
            reasons["timeout"] = f"{_duration(requested_timeout)} is over the maximum of {_duration(maximum_timeout)}"
    return reasons
