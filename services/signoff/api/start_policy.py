"""Whether the approval service could serve the pipeline's approval steps, asked before the pipeline starts.

The approval service refuses a request nobody could ever approve (an unknown user group or user, a quorum larger
than the people eligible) only when its gate opens: after the steps before it ran, perhaps a production deploy.
`signoff run` (POST /api/v1/executions) asks the same rules first (`refusal_reasons`, the one place they live),
against the directory as the approval schema stores it, with the starting user as the pipeline executor, and names
each problem by its path in the pipeline document. The approval service still decides when the gate opens: the
directory may change in between.

Only what is known before the run is checked: a rule whose `userGroups` or `users` hold an expression (`<+...>`,
resolved while the pipeline runs) is skipped, and so is the timeout rule (its maximum, SIGNOFF_MAX_TIMEOUT, is the
approval service's setting, which the api does not know). Steps the executor never runs (`rollbackSteps`) are not
in the parsed pipeline, so they are never checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import asyncpg

from signoff.approval.domain.model import Member
from signoff.approval.domain.requests import RequestedRule, refusal_reasons
from signoff.approval.mapping import member_from_row
from signoff.approval.repository import ApprovalRepository
from signoff.catalog.yamldoc import Issue, join_path
from signoff.executor.domain.pipeline import HarnessApprovalSpec, ParallelStages, Pipeline, Step, StepElement, StepGroup
from signoff.kernel import ApproverInput, TimeoutAction

__all__ = ["ApprovalCheck", "approval_checks", "policy_issues", "start_policy_issues"]

EXPRESSION = "<+"

_YAML_KEYS = {"user_groups": "userGroups", "users": "users", "minimum_count": "minimumCount"}
"""A refusal reason's rule field (`RequestedRule` field + `.user_groups`) as the approvers block spells it."""

_NO_MAXIMUM = timedelta.max
"""Never refuses a timeout: the api does not know the approval service's SIGNOFF_MAX_TIMEOUT (and sends none)."""


@dataclass(frozen=True)
class ApprovalCheck:
    """One approval step's request as far as it is known before the run: `path` is the step's path in the pipeline
    document (`pipeline.stages[0].stage.spec.execution.steps[1].step`); each rule's `field` is its approvers
    block's path (`….step.spec.approvers`, `….step.spec.approvers.rules[0]`)."""

    path: str
    rules: tuple[RequestedRule, ...]
    disallow_pipeline_executor: bool
    inputs: tuple[ApproverInput, ...]
    timeout_action: TimeoutAction

    @property
    def groups(self) -> set[str]:
        return {group for rule in self.rules for group in rule.user_groups}

    @property
    def users(self) -> set[str]:
        return {user for rule in self.rules for user in rule.users}


def _steps(elements: Sequence[StepElement], path: str) -> Iterator[tuple[str, Step]]:
    # A parsed pipeline had no problem, so every element of the document's lists is in it, in order: its index
    # there is its index here (the parser's paths: `steps[i].step`, `steps[i].stepGroup.steps[j]`,
    # `steps[i].parallel[j].step`).
    for index, element in enumerate(elements):
        at = join_path(path, index)
        if isinstance(element, Step):
            yield join_path(at, "step"), element
        elif isinstance(element, StepGroup):
            yield from _steps(element.steps, join_path(at, "stepGroup", "steps"))
        else:
            yield from _steps(element.items, join_path(at, "parallel"))


def approval_steps(pipeline: Pipeline) -> Iterator[tuple[str, Step]]:
    """Every HarnessApproval step of `pipeline` (as parsed: steps it never runs are not in it) with its path in the
    document, in document order."""
    for index, item in enumerate(pipeline.items):
        at = join_path("pipeline.stages", index)
        lanes = (
            [(join_path(at, "parallel", lane, "stage"), stage) for lane, stage in enumerate(item.stages)]
            if isinstance(item, ParallelStages)
            else [(join_path(at, "stage"), item)]
        )
        for stage_path, stage in lanes:
            for path, step in _steps(stage.steps, join_path(stage_path, "spec", "execution", "steps")):
                if step.type == "HarnessApproval":
                    yield path, step


def _literal(*values: Iterable[str]) -> bool:
    return not any(EXPRESSION in value for names in values for value in names)


def approval_checks(pipeline: Pipeline) -> list[ApprovalCheck]:
    """The approval steps of `pipeline` with the rules the executor will send for them (the approvers block's
    top-level groups and users are one rule when they name anyone, then each of `rules`), literal rules only."""
    checks = []
    for path, step in approval_steps(pipeline):
        spec: HarnessApprovalSpec = step.spec
        approvers = spec.approvers
        where = join_path(path, "spec", "approvers")
        candidates = [
            RequestedRule(f"{where}.{at}" if at else where, groups, users, count)
            for at, groups, users, count in approvers.written_rules()
        ]
        # Names resolved while the pipeline runs may name anyone: such a rule is the approval service's to judge.
        rules = tuple(rule for rule in candidates if _literal(rule.user_groups, rule.users))
        inputs = tuple(
            # A default that is an expression is one as far as can be told before the run; allowed values do not
            # matter to the refusal rules (and the parser checked a literal default against them).
            ApproverInput(name=item.name, default_value=item.default_value or None, required=item.required)
            for item in spec.approver_inputs
        )
        checks.append(
            ApprovalCheck(
                path=path,
                rules=rules,
                disallow_pipeline_executor=approvers.disallow_pipeline_executor,
                inputs=inputs,
                timeout_action=spec.kernel_timeout_action,
            )
        )
    return checks


def _issue_path(check: ApprovalCheck, field: str) -> str:
    if field == "approver_inputs":
        return join_path(check.path, "spec", "approverInputs")
    if field == "timeout":  # not asked (no requested timeout is passed); named like the step's own field
        return join_path(check.path, "timeout")
    rule, _, key = field.rpartition(".")
    return join_path(rule, _YAML_KEYS.get(key, key))


def policy_issues(
    checks: Sequence[ApprovalCheck],
    *,
    directory: Mapping[str, Iterable[Member]],
    known_users: Collection[str],
    pipeline_executor: str,
) -> list[Issue]:
    """Why the approval service would refuse the steps' requests, by path in the pipeline document, in document
    order; empty when it would serve them all. `directory` and `known_users` as `refusal_reasons` takes them."""
    issues = []
    for check in checks:
        reasons = refusal_reasons(
            check.rules,
            directory=directory,
            known_users=known_users,
            disallow_pipeline_executor=check.disallow_pipeline_executor,
            pipeline_executor=pipeline_executor,
            inputs=check.inputs,
            timeout_action=check.timeout_action,
            requested_timeout=None,
            maximum_timeout=_NO_MAXIMUM,
        )
        issues.extend(Issue(_issue_path(check, field), reason) for field, reason in reasons.items())
    return issues


async def start_policy_issues(
    conn: asyncpg.Connection, repository: ApprovalRepository, checks: Sequence[ApprovalCheck], pipeline_executor: str
) -> list[Issue]:
    """`policy_issues` against the directory as stored (only the groups and users the checks name are read)."""
    members: dict[str, list[Member]] = defaultdict(list)
    known_users: list[str] = []
    if any(check.rules for check in checks):
        if await repository.has_directory(conn):
            for row in await repository.members_of(conn, set().union(*(check.groups for check in checks))):
                members[row["group_name"]].append(member_from_row(row))
            known_users = await repository.known_users(conn, set().union(*(check.users for check in checks)))
        else:
            # A fresh install with no directory loaded yet: every group and user would be unknown, yet the directory
            # may well be loaded before the gate opens. Refusing now would refuse every approval pipeline; when the
            # gate opens the approval service refuses it anyway if it still cannot be served, with its reason. Only
            # the rules that need no directory (the timeout action's inputs) are asked.
            checks = [replace(check, rules=()) for check in checks]
    return policy_issues(checks, directory=dict(members), known_users=known_users, pipeline_executor=pipeline_executor)
