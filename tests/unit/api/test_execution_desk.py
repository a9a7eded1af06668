"""The api's start of an execution: the pipeline check runs off the event loop (one request's pipeline never stalls
the others), an alias bomb is a short 422 naming `pipeline_yaml`, an over-large `pipeline_yaml` is refused, and an
approval step the approval service would refuse (unknown group, quorum beyond the eligible) is a 422 naming its path
before anything is published."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from pydantic import ValidationError

from signoff import contracts as wire
from signoff.api import executions, models, start_policy
from signoff.api.executions import ExecutionDesk
from signoff.api.identity import Principal
from signoff.api.problems import ApiProblem
from signoff.approval.domain.model import Member
from signoff.approval.domain.requests import RequestedRule
from signoff.executor.domain.pipeline import PipelineError, parse_pipeline
from tests.support.yaml_bombs import alias_bomb
from tests.unit.executor.builders import approval, as_yaml, group, parallel, pipeline, shell, stage

ALICE = Principal(user="alice", credential="token", credential_id="t1")


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, **_: object) -> None:
        self.sent.append((topic, value))


def desk(producer: Producer) -> ExecutionDesk:
    return approver_desk(producer, Directory({}))


async def test_the_pipeline_check_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = executions.check_start
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def slow_check(*args, **kwargs):
        threads.append(threading.get_ident())
        started.set()
        assert release.wait(10), "the event loop did not run while the check did"
        return checked(*args, **kwargs)

    monkeypatch.setattr(executions, "check_start", slow_check)
    producer = Producer()
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(pipeline(stage("s", shell("a")))))
    start = asyncio.create_task(desk(producer).start(ALICE, request))
    assert await asyncio.to_thread(started.wait, 10)
    release.set()  # the loop is free while the check waits: this line runs, and the check goes on
    answer = await asyncio.wait_for(start, 10)
    assert threads and threads[0] != loop_thread
    assert answer.pipeline == "test_pipeline" and answer.triggered_by == "alice" and len(producer.sent) == 1


async def test_an_alias_bomb_is_a_short_422_naming_pipeline_yaml() -> None:
    producer = Producer()
    with pytest.raises(ApiProblem) as caught:
        await desk(producer).start(ALICE, models.ExecutionRequest(pipeline_yaml=alias_bomb()))
    problem = caught.value
    assert problem.status == 422 and problem.code == "invalid_pipeline"
    assert [error["field"] for error in problem.errors] == ["pipeline_yaml"]
    assert "expands to more than" in problem.detail and len(problem.detail) < 300
    assert producer.sent == []


def test_an_over_large_pipeline_yaml_is_refused() -> None:
    limit = models.ExecutionRequest.model_fields["pipeline_yaml"].metadata[-1].max_length
    assert limit == 256 * 1024
    models.ExecutionRequest(pipeline_yaml="#" * limit)
    with pytest.raises(ValidationError, match="pipeline_yaml"):
        models.ExecutionRequest(pipeline_yaml="#" * (limit + 1))


async def test_a_nul_character_in_a_variable_is_a_422_naming_it_and_nothing_is_published() -> None:
    """The executor could not store it (PostgreSQL's text refuses NUL): the run would be lost, not failed."""
    producer = Producer()
    document = as_yaml(pipeline(stage("s", shell("a")), variables=[{"name": "tag", "type": "String", "value": "1"}]))
    request = models.ExecutionRequest(pipeline_yaml=document, variables={"tag": "2.0\x00.0"})
    with pytest.raises(ApiProblem) as caught:
        await desk(producer).start(ALICE, request)
    assert (caught.value.status, caught.value.code) == (422, "invalid_request")
    assert caught.value.errors == [{"field": "variables.tag", "message": wire.NUL_PROBLEM}]
    assert producer.sent == []


async def test_at_most_concurrent_checks_run_at_once_the_rest_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = executions.check_start
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def slow_check(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        arrived.release()
        assert release.wait(10)
        with lock:
            running -= 1
        return checked(*args, **kwargs)

    monkeypatch.setattr(executions, "check_start", slow_check)
    producer = Producer()
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(pipeline(stage("s", shell("a")))))
    desk_ = desk(producer)
    starts = [asyncio.create_task(desk_.start(ALICE, request)) for _ in range(executions.CONCURRENT_CHECKS + 2)]
    for _ in range(executions.CONCURRENT_CHECKS):  # the first ones are in their threads
        assert await asyncio.to_thread(arrived.acquire, True, 10)
    release.set()
    await asyncio.wait_for(asyncio.gather(*starts), 30)
    assert most == executions.CONCURRENT_CHECKS and len(producer.sent) == len(starts)


# ------------------------------------------------------------------------------------ the approval steps' policies


class Directory:
    """The approval repository's directory reads over `groups` (group -> user ids); no database."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self.asked: list[set[str]] = []

    async def has_directory(self, conn: object) -> bool:
        return any(self.groups.values())

    async def members_of(self, conn: object, groups: object) -> list[dict[str, object]]:
        wanted = set(groups)  # type: ignore[call-overload]
        self.asked.append(wanted)
        return [
            {"group_name": group, "user_id": user, "email": None, "chat_handles": {}}
            for group, users in self.groups.items()
            if group in wanted
            for user in users
        ]

    async def known_users(self, conn: object, users: object) -> list[str]:
        wanted = {user.lower() for user in users}  # type: ignore[attr-defined]
        return sorted({user for members in self.groups.values() for user in members if user.lower() in wanted})

    async def email_of(self, conn: object, user: str) -> str | None:
        return None  # these groups list no e-mail


class Pool:
    @contextlib.asynccontextmanager
    async def acquire(self):
        yield object()


DIRECTORY = {"docs": ["dana", "eli"], "sre": ["alice", "bob", "carol"]}
STEP = "pipeline.stages[0].stage.spec.execution.steps[1].step"


def approver_desk(producer: Producer, directory: Directory) -> ExecutionDesk:
    return ExecutionDesk(
        pool=Pool(),  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        catalog=None,
        wait_seconds=1,
        approval=directory,  # type: ignore[arg-type]
    )


def gated(approvers: dict, **spec: object) -> dict:
    return pipeline(stage("s", shell("a"), approval("gate", approvers=approvers, **spec)))


def checks_of(document: dict) -> list[start_policy.ApprovalCheck]:
    return start_policy.approval_checks(parse_pipeline(as_yaml(document)))


def issues(document: dict, user: str = "alice", groups: dict[str, list[str]] = DIRECTORY) -> list[str]:
    checks = checks_of(document)
    members = {group: [Member(user_id=user_id) for user_id in users] for group, users in groups.items()}
    known = {user_id for users in groups.values() for user_id in users}
    return [
        str(issue)
        for issue in start_policy.policy_issues(checks, directory=members, known_users=known, pipeline_executor=user)
    ]


def test_the_paths_of_approval_steps_are_where_the_parser_would_name_them() -> None:
    # Each approval step spot the parser knows (a stage, a parallel stage, a step group, parallel steps): a broken
    # spec there is reported by the parser at exactly the path the check gives the valid step.
    def gate(identifier: str, minimum: int = 1) -> dict:
        return approval(identifier, approvers={"userGroups": ["docs"], "minimumCount": minimum})

    def document(broken: str | None) -> dict:
        return pipeline(
            stage("one", shell("a"), gate("first", 0 if broken == "first" else 1)),
            parallel(stage("two", group("g", shell("b"), gate("grouped", 0 if broken == "grouped" else 1)))),
            stage("three", parallel(shell("c"), shell("d")), gate("last", 0 if broken == "last" else 1)),
        )

    paths = [check.path for check in checks_of(document(None))]
    assert paths == [
        "pipeline.stages[0].stage.spec.execution.steps[1].step",
        "pipeline.stages[1].parallel[0].stage.spec.execution.steps[0].stepGroup.steps[1].step",
        "pipeline.stages[2].stage.spec.execution.steps[1].step",
    ]
    for identifier, path in zip(("first", "grouped", "last"), paths, strict=True):
        with pytest.raises(PipelineError) as caught:
            parse_pipeline(as_yaml(document(identifier)))
        assert [issue.path for issue in caught.value.issues] == [f"{path}.spec.approvers.minimumCount"]


def test_the_rules_are_those_the_executor_sends_top_level_first_then_each_rule() -> None:
    both = {"userGroups": ["docs"], "users": ["carol"], "minimumCount": 2, "rules": [{"userGroups": ["sre"]}]}
    (check,) = checks_of(gated(both))
    assert check.rules == (
        RequestedRule(f"{STEP}.spec.approvers", ("docs",), ("carol",), 2),
        RequestedRule(f"{STEP}.spec.approvers.rules[0]", ("sre",), (), 1),
    )
    (rules_only,) = checks_of(gated({"rules": [{"users": ["bob"]}]}))
    assert rules_only.rules == (RequestedRule(f"{STEP}.spec.approvers.rules[0]", (), ("bob",), 1),)


def test_an_unknown_user_group_is_named_by_its_path() -> None:
    assert issues(gated({"userGroups": ["sre-typo"]})) == [
        f"{STEP}.spec.approvers.userGroups: unknown user group 'sre-typo'",
        f"{STEP}.spec.approvers.minimumCount: 1 approvals needed but only 0 eligible people",
    ]


def test_a_quorum_beyond_the_eligible_people_counts_out_the_executor_when_disallowed() -> None:
    assert issues(gated({"userGroups": ["sre"], "minimumCount": 3})) == []
    assert issues(gated({"userGroups": ["sre"], "minimumCount": 3, "disallowPipelineExecutor": True})) == [
        f"{STEP}.spec.approvers.minimumCount: 3 approvals needed but only 2 eligible people "
        "(the pipeline executor may not approve)"
    ]
    rules = {"userGroups": ["docs"], "rules": [{"userGroups": ["docs"], "users": ["carol"], "minimumCount": 4}]}
    assert issues(gated(rules)) == [
        f"{STEP}.spec.approvers.rules[0].minimumCount: 4 approvals needed but only 3 eligible people"
    ]


def test_unknown_users_and_a_timeout_approval_nobody_can_fill_are_named_too() -> None:
    assert issues(gated({"users": ["dana", "zed"], "minimumCount": 1})) == [
        f"{STEP}.spec.approvers.users: unknown user 'zed'"
    ]
    inputs = [{"name": "ticket", "required": True}]
    assert issues(gated({"userGroups": ["docs"]}, approverInputs=inputs, timeoutAction="Approve")) == [
        f"{STEP}.spec.approverInputs: timeout action 'approve' needs a default for required input(s): ticket"
    ]
    from_variable = [{"name": "ticket", "required": True, "defaultValue": "<+pipeline.variables.ticket>"}]
    assert issues(gated({"userGroups": ["docs"]}, approverInputs=from_variable, timeoutAction="Approve")) == []


def test_rules_naming_an_expression_are_left_to_the_approval_service() -> None:
    approvers = {
        "userGroups": ["<+pipeline.variables.team>", "sre-typo"],
        "minimumCount": 9,
        "rules": [{"users": ["<+pipeline.triggeredBy.email>"]}, {"userGroups": ["docs-typo"]}],
    }
    (check,) = checks_of(gated(approvers))
    assert [rule.field for rule in check.rules] == [f"{STEP}.spec.approvers.rules[1]"]
    assert issues(gated(approvers))[0] == f"{STEP}.spec.approvers.rules[1].userGroups: unknown user group 'docs-typo'"


def test_steps_the_executor_never_runs_are_not_checked() -> None:
    document = pipeline(stage("s", shell("a")))
    rollback = approval("undo", approvers={"userGroups": ["nobody-knows"]})
    document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["rollbackSteps"] = [rollback]
    assert checks_of(document) == [] and issues(document) == []


async def test_a_refused_approval_step_is_a_422_naming_its_path_and_nothing_is_published() -> None:
    producer, directory = Producer(), Directory(DIRECTORY)
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(gated({"userGroups": ["sre-typo", "docs"]})))
    with pytest.raises(ApiProblem) as caught:
        await approver_desk(producer, directory).start(ALICE, request)
    problem = caught.value
    message = f"invalid pipeline: {STEP}.spec.approvers.userGroups: unknown user group 'sre-typo'"
    assert (problem.status, problem.code, problem.detail) == (422, "invalid_pipeline", message)
    assert problem.errors == [{"field": "pipeline_yaml", "message": message}]
    assert producer.sent == [] and directory.asked == [{"sre-typo", "docs"}]


async def test_a_pipeline_the_approval_service_can_serve_starts() -> None:
    producer = Producer()
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(gated({"userGroups": ["sre"], "minimumCount": 3})))
    answer = await approver_desk(producer, Directory(DIRECTORY)).start(ALICE, request)
    assert answer.pipeline == "test_pipeline" and len(producer.sent) == 1


async def test_without_a_directory_nothing_is_refused_for_its_groups() -> None:
    producer, directory = Producer(), Directory({})
    request = models.ExecutionRequest(pipeline_yaml=as_yaml(gated({"userGroups": ["sre-typo"], "minimumCount": 5})))
    await approver_desk(producer, directory).start(ALICE, request)
    assert len(producer.sent) == 1 and directory.asked == []
    # What needs no directory is still asked.
    unfillable = gated(
        {"userGroups": ["sre"]}, approverInputs=[{"name": "t", "required": True}], timeoutAction="Approve"
    )
    with pytest.raises(ApiProblem, match=r"approverInputs: timeout action 'approve' needs a default"):
        await approver_desk(producer, directory).start(
            ALICE, models.ExecutionRequest(pipeline_yaml=as_yaml(unfillable))
        )
