"""The execution state machine: plan order, dispatch, transitions, serialization and the restart rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from signoff.catalog import Catalog, Resolved, Unresolved
from signoff.executor.domain.actions import (
    ApprovalActivity,
    Approver,
    CancelApproval,
    ExecutionFinished,
    RequestApproval,
    RunShellScript,
    StartWait,
    TriggeredBy,
)
from signoff.executor.domain.execution import (
    APPROVAL_ANSWER_GRACE,
    NO_APPROVAL_ANSWER,
    NOT_STARTED_REASON,
    RESTART_REASON,
    Execution,
    InvalidStart,
    InvalidTransition,
    UnknownStep,
)
from signoff.executor.domain.expressions import render
from signoff.executor.domain.pipeline import Pipeline, parse_pipeline
from signoff.executor.domain.plan import ParallelBlock, PlannedStep
from signoff.executor.domain.state import ExecutionStatus, StepStatus
from signoff.kernel import ApprovalRule, TimeoutAction
from tests.unit.executor.builders import (
    EXAMPLES,
    approval,
    deployment,
    group,
    load_pipeline,
    parallel,
    pipeline,
    seed_pipeline_yaml,
    shell,
    stage,
    wait,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ADA = TriggeredBy(name="Ada", email="ada@example.com")
STAGING = "staging_blue_green"
ROLLOUT = "production_rollout"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLES / "catalog.yaml")


def start(document, catalog: Catalog | None = None, **kwargs) -> Execution:
    parsed = document if isinstance(document, Pipeline) else parse_pipeline(document, catalog=catalog)
    kwargs.setdefault("now", T0)
    return Execution.start(parsed, execution_id="ex-1", sequence_id=1, triggered_by=ADA, catalog=catalog, **kwargs)


def blue_green(catalog: Catalog, name: str = "blue-green.yaml", **kwargs) -> Execution:
    parsed = load_pipeline(EXAMPLES / "pipelines" / name, catalog=catalog)
    return start(parsed, catalog, **kwargs)


def kinds(actions) -> list[tuple[str, str]]:
    return [(action.kind, getattr(action, "step_path", "")) for action in actions]


def run_to_approval(execution: Execution) -> RequestApproval:
    [deploy] = execution.next_actions(T0)
    assert isinstance(deploy, RunShellScript)
    execution.step_succeeded(deploy.step_path, {"greenUrl": "https://green.staging.example.com"}, now=T0)
    [smoke] = execution.next_actions(T0 + timedelta(minutes=1))
    assert isinstance(smoke, RunShellScript)
    execution.step_succeeded(smoke.step_path, {"result": "passed", "extra": "dropped"}, now=T0 + timedelta(minutes=2))
    [request] = execution.next_actions(T0 + timedelta(minutes=2))
    assert isinstance(request, RequestApproval)
    return request


# -- plan ----------------------------------------------------------------------------------------------------------


def test_plan_orders_stages_and_steps_flattening_groups_and_keeping_parallel_lanes(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    assert [step.path for step in execution.plan.steps()] == [
        f"{STAGING}.deploy_green",
        f"{STAGING}.smoke_test",
        f"{STAGING}.Harness_Approval_Step",
        f"{STAGING}.echo_input",
        f"{STAGING}.swap_primary",
        f"{ROLLOUT}.roll_out.roll_out_eu",
        f"{ROLLOUT}.roll_out.roll_out_us",
        f"{ROLLOUT}.roll_out.bake",
    ]
    rollout = execution.plan.stage(ROLLOUT)
    block, bake = rollout.blocks
    assert isinstance(block, ParallelBlock) and isinstance(bake, PlannedStep)
    assert [[step.identifier for step in lane] for lane in block.lanes] == [["roll_out_eu"], ["roll_out_us"]]
    assert bake.groups == ("roll_out",) and not bake.in_parallel
    assert "  parallel:" in execution.plan.describe()


def test_parallel_stages_and_nested_blocks_run_in_the_right_order() -> None:
    document = pipeline(
        stage("first", shell("a")),
        {
            "parallel": [
                stage("left", shell("b"), shell("c")),
                stage("right", parallel(shell("d"), group("g", shell("e"), shell("f")))),
            ]
        },
        stage("last", shell("h")),
    )
    execution = start(document)
    assert kinds(execution.next_actions(T0)) == [("run_shell_script", "first.a")]
    execution.step_succeeded("first.a", now=T0)
    assert kinds(execution.next_actions(T0)) == [
        ("run_shell_script", "left.b"),
        ("run_shell_script", "right.d"),
        ("run_shell_script", "right.g.e"),
    ]
    assert execution.next_actions(T0) == []  # dispatched steps are not dispatched twice
    execution.step_succeeded("right.g.e", now=T0)
    assert kinds(execution.next_actions(T0)) == [("run_shell_script", "right.g.f")]
    for path in ("left.b", "right.d", "right.g.f"):
        execution.step_succeeded(path, now=T0)
    assert kinds(execution.next_actions(T0)) == [("run_shell_script", "left.c")]
    execution.step_succeeded("left.c", now=T0)
    assert kinds(execution.next_actions(T0)) == [("run_shell_script", "last.h")]
    execution.step_succeeded("last.h", now=T0)
    assert execution.status == ExecutionStatus.SUCCEEDED
    assert kinds(execution.next_actions(T0)) == [("execution_finished", "")]


# -- the approval request --------------------------------------------------------------------------------------------


def test_seed_pipeline_requests_its_approval(catalog: Catalog) -> None:
    execution = start(seed_pipeline_yaml())
    [action] = execution.next_actions(T0)
    assert isinstance(action, RequestApproval)
    request = action.request
    assert request.message.text == "Test"
    # The shared kernel's policy: the Harness approvers block is its one rule.
    assert request.policy.rules == (ApprovalRule(user_groups=("docs",), minimum_count=1),)
    assert [(i.name, i.default_value) for i in request.inputs] == [("foo", "bar")]
    assert request.timeout == timedelta(days=1) and request.expires_at == T0 + timedelta(days=1)
    assert execution.step("approve.Harness_Approval_Step").status == StepStatus.WAITING_APPROVAL


def test_approval_request_carries_resolved_history_and_stage_metadata(catalog: Catalog) -> None:
    request = run_to_approval(blue_green(catalog)).request
    assert request.pipeline.triggered_by == ADA
    assert request.step.path == f"{STAGING}.Harness_Approval_Step"
    assert request.include_pipeline_execution_history
    [history] = request.history
    assert [(s.identifier, s.status) for s in history.steps] == [
        ("deploy_green", "SUCCEEDED"),
        ("smoke_test", "SUCCEEDED"),
    ]

    current = request.current_stage
    assert [s.name for s in current.services if isinstance(s, Resolved)] == ["Checkout API"]  # from an expression
    [env] = current.environments
    assert isinstance(env.environment, Resolved) and env.environment.entity.type == "PreProduction"
    assert [i.name for i in env.infrastructures] == ["Staging cluster"]
    assert [(a.image, a.tag) for a in current.artifacts] == [("registry.example.com/shop/checkout", "1.4.2")]
    assert current.custom_metadata == {"changeTicket": "CHG-1042"}

    [upcoming] = request.upcoming_stages
    assert upcoming.status == "QUEUED"
    assert [s.identifier for s in upcoming.services] == ["checkout", "payments_worker"]
    assert [(e.environment.name, [i.name for i in e.infrastructures]) for e in upcoming.environments] == [
        ("Production EU", ["EKS eu-west-1"]),
        ("Production US", ["EKS us-east-1"]),
    ]


def test_approval_request_survives_json(catalog: Catalog) -> None:
    action = run_to_approval(blue_green(catalog))
    assert RequestApproval.model_validate(json.loads(json.dumps(action.model_dump(mode="json")))) == action


def test_an_approval_request_stored_in_the_harness_shape_still_restores(catalog: Catalog) -> None:
    # Before the shared kernel, a pending request kept the approvers block as written, with the timeout action
    # and auto-reject inside it, Harness's timeout words, and "" for an input without a default.
    action = run_to_approval(
        blue_green(catalog, "blue-green-rich-approval.yaml", variables={"rollout_service": "storefront"})
    )
    stored = action.model_dump(mode="json")
    stored["request"]["policy"] = {
        "user_groups": ["qa", "sre"],
        "users": [],
        "minimum_count": 1,
        "disallow_pipeline_executor": True,
        "rules": [
            {"name": "one QA sign-off", "user_groups": ["qa"], "users": [], "minimum_count": 1},
            {"name": "two SREs", "user_groups": ["sre"], "users": [], "minimum_count": 2},
        ],
        "auto_reject_previous_approvals": True,
        "timeout_action": "Reject",
    }
    for key in ("timeout_action", "auto_reject_previous_approvals"):
        del stored["request"][key]
    stored["request"]["inputs"] = [
        {"name": "foo", "default_value": "bar", "required": False, "allowed_values": []},
        {"name": "note", "default_value": "", "required": True, "allowed_values": []},
    ]
    restored = RequestApproval.model_validate(stored).request
    assert restored.policy == action.request.policy
    assert (restored.timeout_action, restored.auto_reject_previous_approvals) == (TimeoutAction.REJECT, True)
    assert [(i.name, i.default_value, i.required, i.allowed_values) for i in restored.inputs] == [
        ("foo", "bar", False, None),
        ("note", None, True, None),
    ]


def test_rich_approval_message_resolves_what_is_known_and_marks_the_rest(catalog: Catalog) -> None:
    execution = blue_green(catalog, "blue-green-rich-approval.yaml", variables={"rollout_service": "storefront"})
    request = run_to_approval(execution).request
    assert request.message.text.splitlines() == [
        "Checkout API 1.4.2 is live as green on Staging (shop).",
        "Smoke test: passed",
        "Change ticket: CHG-1042, started by Ada.",
        "Next: Production rollout of storefront.",
    ]
    # The top-level approvers are the first rule, the block's `rules` the others.
    assert [(rule.user_groups, rule.minimum_count) for rule in request.policy.rules] == [
        (("qa", "sre"), 1),
        (("qa",), 1),
        (("sre",), 2),
    ]
    assert request.policy.disallow_pipeline_executor
    assert request.auto_reject_previous_approvals and request.timeout_action is TimeoutAction.REJECT
    assert request.timeout == timedelta(hours=4)
    [upcoming] = request.upcoming_stages
    assert [s.name for s in upcoming.services] == ["Storefront"]
    assert (
        isinstance(upcoming.environment_group, Resolved) and upcoming.environment_group.name == "All production regions"
    )
    assert [[g.name for g in e.gitops_clusters] for e in upcoming.environments] == [
        ["Argo CD production EU"],
        ["Argo CD production US"],
    ]
    speed = (
        "<+pipeline.stages.staging_blue_green.spec.execution.steps.approve_rollout.output.approverInputs.rollout_speed>"
    )
    assert upcoming.custom_metadata == {"changeTicket": "CHG-1042", "rolloutSpeed": speed}
    assert upcoming.unresolved == (speed,)


def test_a_future_expression_in_an_upcoming_stage_is_unresolved_not_blank(catalog: Catalog) -> None:
    document = pipeline(
        deployment("staging", approval("approve")),
        deployment(
            "prod",
            shell("x"),
            service="<+pipeline.stages.staging.spec.execution.steps.approve.output.approverInputs.foo>",
            env="prod_eu",
            infra="eks_eu",
        ),
    )
    [action] = start(document, catalog).next_actions(T0)
    assert isinstance(action, RequestApproval)
    [service] = action.request.upcoming_stages[0].services
    assert isinstance(service, Unresolved)
    assert service.raw == "<+pipeline.stages.staging.spec.execution.steps.approve.output.approverInputs.foo>"
    assert service.reason == f"{service.raw} (stage 'staging' has no step outputs yet)"


def test_without_a_catalog_refs_are_unresolved_but_identifiers_still_render() -> None:
    document = pipeline(
        deployment("staging", shell("a", "echo <+service.identifier> <+env.identifier>"), approval("b"))
    )
    execution = start(document)
    [run] = execution.next_actions(T0)
    assert isinstance(run, RunShellScript) and run.script == 'echo "${SIGNOFF_EXPR_1}" "${SIGNOFF_EXPR_2}"'
    assert run.environment == {"SIGNOFF_EXPR_1": "checkout", "SIGNOFF_EXPR_2": "staging"}
    execution.step_succeeded("staging.a", now=T0)
    [request] = execution.next_actions(T0)
    assert isinstance(request, RequestApproval)
    [service] = request.request.current_stage.services
    assert isinstance(service, Unresolved) and service.reason == "no catalog configured"


# -- transitions ----------------------------------------------------------------------------------------------------


def test_approve_then_run_to_success_with_parallel_steps_and_wait(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    assert execution.step(f"{STAGING}.smoke_test").outputs == {"result": "passed"}
    approved_at = T0 + timedelta(minutes=30)
    assert execution.approval_approved(
        request.step_path, {"foo": "baz"}, [Approver(name="Bo")], "lgtm", now=approved_at
    )
    step = execution.step(request.step_path)
    assert step.status == StepStatus.SUCCEEDED and step.approval is not None
    assert step.approval.inputs == {"foo": "baz"} and step.approval.activities[0].comments == "lgtm"

    [echo] = execution.next_actions(approved_at)
    assert isinstance(echo, RunShellScript) and echo.script == 'echo "foo is ${SIGNOFF_EXPR_1}"'
    assert echo.environment == {"SIGNOFF_EXPR_1": "baz"}
    execution.step_succeeded(echo.step_path, now=approved_at)
    [swap] = execution.next_actions(approved_at)
    assert (
        isinstance(swap, RunShellScript)
        and swap.script == 'echo "routing ${SIGNOFF_EXPR_1} traffic to ${SIGNOFF_EXPR_2}"'
    )
    assert swap.environment == {"SIGNOFF_EXPR_1": "Staging", "SIGNOFF_EXPR_2": "1.4.2"}
    execution.step_succeeded(swap.step_path, now=approved_at)
    assert execution.stage_status(STAGING) == StepStatus.SUCCEEDED

    rollouts = execution.next_actions(approved_at)
    assert kinds(rollouts) == [
        ("run_shell_script", f"{ROLLOUT}.roll_out.roll_out_eu"),
        ("run_shell_script", f"{ROLLOUT}.roll_out.roll_out_us"),
    ]
    for action in rollouts:
        execution.step_succeeded(action.step_path, now=approved_at)
    [bake] = execution.next_actions(approved_at)
    assert isinstance(bake, StartWait) and bake.until == approved_at + timedelta(minutes=15)
    assert execution.next_wakeup() == bake.until
    assert not execution.tick(bake.until - timedelta(seconds=1))
    assert execution.tick(bake.until)
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.finished_at == bake.until
    [finished] = execution.next_actions(bake.until)
    assert isinstance(finished, ExecutionFinished) and finished.status == "SUCCEEDED"


def test_approval_defaults_fill_missing_inputs(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    execution.approval_approved(request.step_path, {"unknown": "x"}, [Approver(name="Bo")], now=T0)
    assert execution.step(request.step_path).approval.inputs == {"foo": "bar"}  # type: ignore[union-attr]


def test_reject_fails_the_pipeline_and_skips_the_rest(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    assert execution.approval_rejected(request.step_path, [Approver(name="Bo")], "not today", now=T0)
    assert execution.step(request.step_path).status == StepStatus.APPROVAL_REJECTED
    assert execution.status == ExecutionStatus.FAILED
    assert execution.reason == f"approval {request.step_path} was rejected by Bo: not today"
    assert execution.step(f"{STAGING}.swap_primary").status == StepStatus.SKIPPED
    assert execution.stage_status(ROLLOUT) == StepStatus.SKIPPED
    assert kinds(execution.next_actions(T0)) == [("execution_finished", "")]
    # late or duplicate outcomes change nothing
    assert not execution.approval_approved(request.step_path, now=T0)
    assert not execution.approval_rejected(request.step_path, now=T0)
    assert not execution.abort(now=T0)


def test_a_rejection_no_person_made_names_nobody(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    assert execution.approval_rejected(request.step_path, [], "the timeout action rejected it", now=T0)
    assert execution.reason == f"approval {request.step_path} was rejected: the timeout action rejected it"
    assert execution.status == ExecutionStatus.FAILED


def _votes() -> tuple[ApprovalActivity, ApprovalActivity]:
    """Two approvers' votes as the outcome event carries them: different comments, different times."""
    return (
        ApprovalActivity(
            approver=Approver(name="ada"), action="approve", comments="ship it", decided_at=T0 + timedelta(minutes=5)
        ),
        ApprovalActivity(
            approver=Approver(name="bob"), action="approve", comments="checked", decided_at=T0 + timedelta(minutes=9)
        ),
    )


ACTIVITIES = "<+execution.steps.approve.output.approvalActivities"


def test_each_approval_activity_is_its_own_votes_comment_and_time() -> None:
    execution = start(pipeline(stage("s", approval("approve"), shell("after"))))
    [request] = execution.next_actions(T0)
    processed = T0 + timedelta(hours=1)
    ada, bob = _votes()
    assert execution.approval_approved(request.step_path, {}, [ada, bob], now=processed)
    outcome = execution.step("s.approve").approval
    assert outcome is not None and outcome.activities == (ada, bob) and outcome.decided_at == processed
    ctx = execution.context_for("s.after")
    rendered = {
        path: render(f"{ACTIVITIES}{path}>", ctx).text
        for path in ("[0].comments", "[0].approvedAt", "[0].user.name", "[1].comments", "[1].approvedAt")
    }
    assert rendered == {
        "[0].comments": "ship it",
        "[0].approvedAt": ada.decided_at.isoformat(),
        "[0].user.name": "ada",
        "[1].comments": "checked",
        "[1].approvedAt": bob.decided_at.isoformat(),
    }
    restored = Execution.from_dict(json.loads(json.dumps(execution.to_dict())))
    assert restored.step("s.approve").approval == outcome


def test_bare_approvers_share_the_outcomes_comment_and_time() -> None:
    execution = start(pipeline(stage("s", approval("approve"), shell("after"))))
    [request] = execution.next_actions(T0)
    ada, _ = _votes()
    assert execution.approval_rejected(request.step_path, [ada, Approver(name="bob")], "no", now=T0)
    outcome = execution.step("s.approve").approval
    assert outcome is not None
    assert [(a.approver.name, a.action, a.comments, a.decided_at) for a in outcome.activities] == [
        ("ada", "approve", "ship it", ada.decided_at),
        ("bob", "reject", "no", T0),
    ]


def test_an_approval_stored_before_votes_carried_their_own_time_still_loads() -> None:
    """Stored activities keep their shape (approver, action, comments, decided_at): an execution stored earlier,
    with the Harness spelling of its actions, loads and renders as it was stored."""
    execution = start(pipeline(stage("s", approval("approve"), shell("after"))))
    [request] = execution.next_actions(T0)
    execution.approval_approved(request.step_path, {}, [Approver(name="Bo")], "lgtm; ok", now=T0)
    data = json.loads(json.dumps(execution.to_dict()))
    stored = data["steps"][0]["approval"]
    assert stored["activities"] == [
        {
            "approver": {"name": "Bo", "email": None},
            "action": "approve",
            "comments": "lgtm; ok",
            "decided_at": "2025-03-01T09:00:00Z",
        }
    ]
    stored.update(action="APPROVED", activities=[{**stored["activities"][0], "action": "APPROVE"}])
    restored = Execution.from_dict(data)
    ctx = restored.context_for("s.after")
    assert render(f"{ACTIVITIES}[0].comments> <+execution.steps.approve.output.action>", ctx).text == (
        "lgtm; ok APPROVED"
    )
    assert render(f"{ACTIVITIES}[0].action>", ctx).text == "APPROVE"


def test_expiry_fails_the_pipeline(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    assert execution.approval_expired(request.step_path, now=request.request.expires_at)
    assert execution.step(request.step_path).status == StepStatus.EXPIRED
    assert execution.status == ExecutionStatus.FAILED and execution.reason == f"approval {request.step_path} expired"


def test_abort_cancels_the_pending_approval(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    assert execution.abort("release cancelled", now=T0)
    assert execution.status == ExecutionStatus.ABORTED
    actions = execution.next_actions(T0)
    assert kinds(actions) == [("cancel_approval", request.step_path), ("execution_finished", "")]
    assert isinstance(actions[0], CancelApproval) and actions[0].reason == "cancelled: release cancelled"
    assert execution.step(request.step_path).status == StepStatus.ABORTED
    assert execution.step(f"{STAGING}.echo_input").status == StepStatus.SKIPPED


def test_a_failing_parallel_step_cancels_its_running_sibling() -> None:
    execution = start(pipeline(stage("s", parallel(shell("a"), shell("b")), shell("c"))))
    assert len(execution.next_actions(T0)) == 2
    assert execution.step_failed("s.a", "exit code 2", now=T0)
    assert execution.status == ExecutionStatus.FAILED and execution.reason == "step s.a failed: exit code 2"
    actions = execution.next_actions(T0)
    assert kinds(actions) == [("cancel_step", "s.b"), ("execution_finished", "")]
    assert [execution.step(p).status for p in ("s.a", "s.b", "s.c")] == [
        StepStatus.FAILED,
        StepStatus.ABORTED,
        StepStatus.SKIPPED,
    ]
    assert not execution.step_succeeded("s.b", now=T0)  # the cancelled sibling's late report is ignored


def test_script_timeout_is_enforced_by_tick() -> None:
    execution = start(pipeline(stage("s", shell("a", timeout="90s"))))
    [run] = execution.next_actions(T0)
    assert isinstance(run, RunShellScript) and run.timeout == timedelta(seconds=90)
    assert execution.next_wakeup() == T0 + timedelta(seconds=90)
    assert execution.tick(T0 + timedelta(seconds=91))
    assert execution.step("s.a").reason == "timed out after 1m30s"
    actions = execution.next_actions(T0 + timedelta(seconds=91))
    assert kinds(actions) == [("cancel_step", "s.a"), ("execution_finished", "")]


def test_a_script_with_an_unresolved_expression_fails_before_running() -> None:
    execution = start(pipeline(stage("s", shell("a", "echo <+pipeline.variables.nope>"), shell("b"))))
    actions = execution.next_actions(T0)
    assert kinds(actions) == [("execution_finished", "")]
    step = execution.step("s.a")
    assert step.status == StepStatus.FAILED
    assert step.reason == "unresolved expressions: <+pipeline.variables.nope> (no pipeline variable 'nope')"
    assert execution.step("s.b").status == StepStatus.SKIPPED


def test_reports_that_can_never_apply_raise() -> None:
    execution = start(pipeline(stage("s", shell("a"), approval("b"))))
    execution.next_actions(T0)
    with pytest.raises(InvalidTransition):
        execution.approval_approved("s.a", now=T0)
    with pytest.raises(InvalidTransition):
        execution.step_succeeded("s.b", now=T0)
    with pytest.raises(UnknownStep):
        execution.step_failed("s.zzz", "x", now=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        execution.next_actions(datetime(2025, 1, 1))


# -- start variables ------------------------------------------------------------------------------------------------


def test_start_variables_runtime_inputs_defaults_and_types() -> None:
    variables = [
        {"name": "tag", "type": "String", "value": "<+input>"},
        {"name": "speed", "type": "String", "value": "<+input>.default(normal).allowedValues(slow,normal)"},
        {"name": "replicas", "type": "Number", "value": 2},
        {"name": "token", "type": "Secret", "value": "account.token"},
    ]
    document = pipeline(
        stage(
            "s", shell("a", "echo <+pipeline.variables.tag> <+pipeline.variables.speed> <+pipeline.variables.replicas>")
        ),
        variables=variables,
    )
    with pytest.raises(InvalidStart) as caught:
        start(document, variables={"speed": "warp", "replicas": "many", "token": "x", "extra": 1})
    assert caught.value.problems == [
        "unknown pipeline variable 'extra'",
        "pipeline variable 'tag' is a runtime input (<+input>): supply a value",
        "pipeline variable 'speed': 'warp' is not one of slow, normal",
        "pipeline variable 'replicas' must be a number, got 'many'",
        "secret variable 'token' cannot be supplied (signoff stores no secrets)",
    ]
    execution = start(document, variables={"tag": "2.0.0", "replicas": "5"})
    assert execution.variables == {"tag": "2.0.0", "speed": "normal", "replicas": 5, "token": None}
    [run] = execution.next_actions(T0)
    assert isinstance(run, RunShellScript) and run.environment == {
        "SIGNOFF_EXPR_1": "2.0.0",
        "SIGNOFF_EXPR_2": "normal",
        "SIGNOFF_EXPR_3": "5",
    }


# -- persistence and restart ----------------------------------------------------------------------------------------


def test_serialization_round_trip_mid_execution(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    data = json.loads(json.dumps(execution.to_dict()))
    restored = Execution.from_dict(data, catalog=catalog)
    assert restored.to_dict() == execution.to_dict()
    assert restored.waiting_approvals() == [request.step_path]
    restored.approval_approved(request.step_path, {"foo": "qux"}, [Approver(name="Bo")], now=T0)
    [echo] = restored.next_actions(T0)
    assert isinstance(echo, RunShellScript) and echo.environment == {"SIGNOFF_EXPR_1": "qux"}


def test_pending_actions_survive_serialization() -> None:
    execution = start(pipeline(stage("s", parallel(shell("a"), shell("b")))))
    execution.next_actions(T0)
    execution.step_failed("s.a", "boom", now=T0)
    restored = Execution.from_dict(json.loads(json.dumps(execution.to_dict())))
    assert kinds(restored.next_actions(T0)) == [("cancel_step", "s.b"), ("execution_finished", "")]


def test_restart_fails_a_running_script_by_default() -> None:
    execution = start(pipeline(stage("s", shell("a"), shell("b"))))
    execution.next_actions(T0)
    restored = Execution.from_dict(execution.to_dict())
    restored.recover(T0 + timedelta(minutes=1))
    assert restored.step("s.a").status == StepStatus.FAILED
    assert restored.step("s.a").reason == RESTART_REASON
    assert restored.status == ExecutionStatus.FAILED
    assert kinds(restored.next_actions(T0)) == [("execution_finished", "")]


def test_restart_reruns_a_script_marked_retry_on_restart_as_the_next_attempt() -> None:
    execution = start(pipeline(stage("s", shell("a", spec={"retryOnRestart": True}))))
    [first] = execution.next_actions(T0)
    assert isinstance(first, RunShellScript) and first.attempt == 1
    for attempt in (2, 3):
        execution = Execution.from_dict(execution.to_dict())
        execution.recover(T0)
        [again] = execution.next_actions(T0)
        assert isinstance(again, RunShellScript) and again.attempt == attempt
    assert not execution.step_succeeded("s.a", now=T0, attempt=2)  # a report from the lost attempt is stale
    execution = Execution.from_dict(execution.to_dict())
    execution.recover(T0)
    assert execution.step("s.a").reason == f"{RESTART_REASON} (retryOnRestart: gave up after 3 attempts)"
    assert execution.status == ExecutionStatus.FAILED


def test_restart_queues_again_a_script_that_never_started_and_fails_the_one_that_ran() -> None:
    execution = start(pipeline(stage("s", parallel(shell("ran"), shell("waited")))))
    assert kinds(execution.next_actions(T0)) == [("run_shell_script", "s.ran"), ("run_shell_script", "s.waited")]
    restored = Execution.from_dict(execution.to_dict())
    restored.recover(T0 + timedelta(minutes=1), never_started={"s.waited"})
    # The script that may have run fails by the rule, and fails the pipeline; the other lost nothing, but the
    # pipeline has failed: it is not started again.
    assert restored.step("s.ran").reason == RESTART_REASON
    assert restored.status == ExecutionStatus.FAILED
    assert restored.step("s.waited").status != StepStatus.RUNNING

    alone = start(pipeline(stage("s", shell("waited"), shell("next"))))
    [first] = alone.next_actions(T0)
    assert isinstance(first, RunShellScript) and first.attempt == 1
    for attempt in (2, 3):
        alone = Execution.from_dict(alone.to_dict())
        alone.recover(T0, never_started={"s.waited"})
        assert alone.step("s.waited").reason == f"queued again: {NOT_STARTED_REASON}"
        [again] = alone.next_actions(T0)
        assert isinstance(again, RunShellScript) and (again.step_path, again.attempt) == ("s.waited", attempt)
    alone = Execution.from_dict(alone.to_dict())
    alone.recover(T0, never_started={"s.waited"})  # a replica dying again and again: bounded like retryOnRestart
    assert alone.step("s.waited").reason == f"{NOT_STARTED_REASON} (gave up after 3 attempts)"
    assert alone.status == ExecutionStatus.FAILED


def test_restart_rearms_waits_and_leaves_approvals_alone() -> None:
    execution = start(pipeline(stage("s", parallel(wait("w", "1h"), shell("x"))), stage("t", approval("a"))))
    execution.next_actions(T0)
    execution.step_succeeded("s.x", now=T0)
    restored = Execution.from_dict(execution.to_dict())
    restored.recover(T0 + timedelta(minutes=10))
    [rearm] = restored.next_actions(T0 + timedelta(minutes=10))
    assert isinstance(rearm, StartWait) and rearm.until == T0 + timedelta(hours=1)
    restored.tick(T0 + timedelta(hours=1))
    [request] = restored.next_actions(T0 + timedelta(hours=1))
    assert isinstance(request, RequestApproval)
    again = Execution.from_dict(restored.to_dict())
    again.recover(T0 + timedelta(hours=2))
    assert again.next_actions(T0 + timedelta(hours=2)) == []
    assert again.waiting_approvals() == ["t.a"]


def test_outputs_of_a_step_still_running_are_unresolved_with_the_reason() -> None:
    document = pipeline(stage("s", parallel(shell("a", outputs=("url",)), shell("b")), shell("c")))
    execution = start(document)
    execution.next_actions(T0)
    rendered = render("<+execution.steps.a.output.outputVariables.url>", execution.context_for("s.b"))
    assert rendered.reasons == {"<+execution.steps.a.output.outputVariables.url>": "step 'a' has not finished"}
    execution.step_succeeded("s.a", {"url": "https://x"}, now=T0)
    assert render("<+execution.steps.a.output.outputVariables.url>", execution.context_for("s.c")).text == "https://x"


# -- approvals the service cannot serve, or never answers ---------------------------------------------------------


def test_a_refused_request_fails_the_step_at_once_with_the_reasons(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    reasons = "policy.user_groups: unknown user group 'dosc'"
    assert execution.approval_refused(request.step_path, reasons, now=T0 + timedelta(minutes=3))
    step = execution.step(request.step_path)
    assert step.status == StepStatus.FAILED
    assert step.reason == f"the approval service refused the request: {reasons}"
    assert execution.status == ExecutionStatus.FAILED
    assert not execution.approval_refused(request.step_path, reasons, now=T0 + timedelta(minutes=4))  # late


def test_a_step_with_no_answer_fails_after_the_gate_expiry_plus_the_grace(catalog: Catalog) -> None:
    execution = blue_green(catalog)
    request = run_to_approval(execution)
    asked = T0 + timedelta(minutes=2)
    assert request.request.expires_at == asked + timedelta(days=1)  # the seed's step says 1d
    # Before GateOpened the step's own timeout bounds the wait; GateOpened moves it to the gate's expiry.
    assert execution.next_wakeup() == asked + timedelta(days=1) + APPROVAL_ANSWER_GRACE
    expires = asked + timedelta(hours=5)
    assert execution.approval_opened(request.step_path, expires, now=asked)
    assert execution.next_wakeup() == expires + APPROVAL_ANSWER_GRACE
    assert not execution.tick(expires + APPROVAL_ANSWER_GRACE - timedelta(seconds=1))
    assert execution.tick(expires + APPROVAL_ANSWER_GRACE)
    step = execution.step(request.step_path)
    assert (step.status, step.reason) == (StepStatus.FAILED, NO_APPROVAL_ANSWER)
    assert execution.status == ExecutionStatus.FAILED
    cancels = [a for a in execution.next_actions(expires + APPROVAL_ANSWER_GRACE) if isinstance(a, CancelApproval)]
    assert [c.step_path for c in cancels] == [request.step_path]


def test_a_step_without_a_timeout_leaves_it_to_the_approval_service() -> None:
    document = pipeline(stage("release", approval("approve")))
    del document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["step"]["timeout"]
    execution = start(document)
    [request] = execution.next_actions(T0)
    assert isinstance(request, RequestApproval)
    assert request.request.timeout is None and request.request.expires_at is None
    # Until the gate opens, only the grace bounds the wait for an answer.
    assert execution.next_wakeup() == T0 + APPROVAL_ANSWER_GRACE
