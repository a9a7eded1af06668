"""The executor's domain mapped onto the wire contract: approval requests, lifecycle events, CodePipeline's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signoff import contracts as wire
from signoff.catalog import Catalog
from signoff.contracts.events import (
    ApprovalCause,
    DecisionStatus,
    FailureCause,
    RejectionCause,
    RunStatus,
    TimeoutAction,
    Vote,
)
from signoff.executor.domain.actions import Approver, ExecutionFinished, RequestApproval, TriggeredBy
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.expressions import render
from signoff.executor.domain.pipeline import parse_pipeline
from signoff.executor.mapping import approval_requested, approved_by, finished, rejected_by, step_changed
from signoff.executor.views import pipeline_state
from tests.unit.executor.builders import EXAMPLES, approval, deployment, pipeline, shell, stage

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ADA = wire.Person(user="ada", name="Ada Lovelace", email="ada@example.com")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLES / "catalog.yaml")


def _start(document, catalog: Catalog | None) -> Execution:
    return Execution.start(
        parse_pipeline(document, catalog=catalog),
        execution_id="ex-1",
        sequence_id=1,
        triggered_by=TriggeredBy(name=ADA.name or ADA.user, email=ADA.email),
        now=T0,
        catalog=catalog,
    )


def _at_approval(execution: Execution, outputs: dict[str, str] | None = None) -> RequestApproval:
    """Run the execution's scripts as succeeded (with `outputs`; undeclared names are dropped) up to its approval."""
    now = T0
    while True:
        actions = execution.next_actions(now)
        for action in actions:
            if isinstance(action, RequestApproval):
                return action
            execution.step_succeeded(action.step_path, outputs or {}, now=now)  # type: ignore[union-attr]
        now += timedelta(seconds=1)


def test_an_approval_request_carries_policy_inputs_metadata_and_what_stayed_unresolved(catalog: Catalog) -> None:
    document = pipeline(
        deployment(
            "stage_one",
            shell("prepare"),
            approval(
                "approve",
                message="<+service.name> on <+env.name> for <+pipeline.variables.missing>",
                timeoutAction="Reject",
                approvers={
                    "userGroups": ["qa", "sre"],
                    "minimumCount": 1,
                    "disallowPipelineExecutor": True,
                    "rules": [{"name": "two SREs", "userGroups": ["sre"], "minimumCount": 2}],
                },
                approverInputs=[{"name": "region", "defaultValue": "eu", "allowedValues": ["eu", "us"]}],
            ),
        ),
        stage("later", shell("x")),
    )
    execution = _start(document, catalog)
    request = approval_requested(_at_approval(execution).request, ADA)

    assert request.key.as_path() == "test_pipeline/ex-1/stage_one/approve/1"
    assert request.triggered_by == ADA
    assert request.message_template.startswith("<+service.name>")
    assert request.message == "Checkout API on Staging for <+pipeline.variables.missing>"
    assert request.custom_data == {"unresolved": "<+pipeline.variables.missing>"}
    assert request.timeout_action == TimeoutAction.REJECT and request.timeout == "1d"
    policy = request.policy
    assert policy.user_groups == ["qa", "sre"] and policy.disallow_pipeline_executor
    assert [(r.user_groups, r.minimum_count) for r in policy.rules] == [(["sre"], 2)]
    assert [(i.name, i.default_value, i.allowed_values) for i in request.approver_inputs] == [
        ("region", "eu", ["eu", "us"])
    ]
    assert [(s.identifier, s.type) for s in request.upcoming_stages] == [("later", "Custom")]
    assert [(h.step_id, h.status) for h in request.execution_history] == [
        (None, RunStatus.RUNNING),
        ("prepare", RunStatus.SUCCEEDED),
    ]
    running_stage, prepare = request.execution_history
    # The running stage started with its first step (it showed `started_at: null`) and has not ended.
    assert running_stage.started_at == prepare.started_at is not None and running_stage.ended_at is None


def test_a_finished_stage_of_the_history_has_the_times_of_its_steps() -> None:
    document = pipeline(
        stage("build", shell("a"), shell("b")), stage("gate", approval("approve", includePipelineExecutionHistory=True))
    )
    request = approval_requested(_at_approval(_start(document, None)).request, ADA)
    build, step_a, step_b = request.execution_history[:3]
    assert build.step_id is None and build.status == RunStatus.SUCCEEDED
    assert (build.started_at, build.ended_at) == (step_a.started_at, step_b.ended_at)
    assert build.started_at is not None and build.ended_at is not None and build.ended_at > build.started_at


def test_unresolvable_refs_stay_as_written_in_the_metadata() -> None:
    document = pipeline(deployment("d", approval("approve"), service="<+pipeline.variables.svc>"))
    execution = _start(document, None)
    request = approval_requested(_at_approval(execution).request, ADA)
    assert request.current_stage.service_refs == ["<+pipeline.variables.svc>"]
    # Without a catalog, literal refs are kept as identifiers (the notifier resolves them).
    assert [e.ref for e in request.current_stage.environments] == ["staging"]


def test_lifecycle_events_say_why_an_execution_ended(catalog: Catalog) -> None:
    execution = _start(pipeline(deployment("d", approval("approve"), shell("after"))), catalog)
    _at_approval(execution)
    execution.approval_rejected("d.approve", [Approver(name="bob")], "no", now=T0)
    (end,) = [a for a in execution.next_actions(T0) if isinstance(a, ExecutionFinished)]
    failed = finished(execution, end)
    assert isinstance(failed, wire.ExecutionFailed)
    assert (failed.cause, failed.stage_id, failed.step_id) == (FailureCause.APPROVAL_REJECTED, "d", "approve")
    changed = step_changed(execution, execution.step("d.after"), at=T0)
    assert changed.status == RunStatus.SKIPPED and changed.stage_name == "D"


def test_get_pipeline_state_has_codepipelines_shape_and_the_waiting_token(catalog: Catalog) -> None:
    execution = _start(pipeline(deployment("d", shell("first"), approval("approve"), shell("after"))), catalog)
    _at_approval(execution)
    row = {
        "pipeline_id": "test_pipeline",
        "status": "RUNNING",
        "state": execution.to_dict(),
        "started_at": T0,
        "updated_at": T0,
    }
    gates = [{"step_path": "d.approve", "attempt": 1, "token": "tok-1", "message": "Please approve", "gate_id": "g1"}]
    state = pipeline_state(row, gates)
    assert state["pipelineName"] == "test_pipeline"
    (stage_state,) = state["stageStates"]
    assert stage_state["latestExecution"]["status"] == "InProgress"
    actions = {a["actionName"]: a for a in stage_state["actionStates"]}
    assert actions["first"]["latestExecution"]["status"] == "Succeeded"
    assert actions["approve"]["latestExecution"] == {
        "status": "InProgress",
        "lastStatusChange": (T0 + timedelta(seconds=1)).timestamp(),
        "token": "tok-1",
        "summary": "Please approve",
        "externalExecutionId": "g1",
    }
    assert "latestExecution" not in actions["after"]


def test_upcoming_environment_groups_gitops_clusters_and_custom_metadata_are_carried(catalog: Catalog) -> None:
    rich = parse_pipeline((EXAMPLES / "pipelines" / "blue-green-rich-approval.yaml").read_text(), catalog=catalog)
    execution = Execution.start(
        rich,
        execution_id="ex-2",
        sequence_id=1,
        triggered_by=TriggeredBy(name="Ada"),
        now=T0,
        catalog=catalog,
        variables={"tag": "2.0.0"},
    )
    outputs = {"greenUrl": "https://green.staging.example.com", "result": "passed"}
    request = approval_requested(_at_approval(execution, outputs).request, ADA)
    assert request.message.splitlines()[:2] == [
        "Checkout API 2.0.0 is live as green on Staging (shop).",
        "Smoke test: passed",
    ]
    (production,) = request.upcoming_stages
    assert production.environment_group_ref == "production"
    assert [(e.ref, e.type, e.gitops_cluster_refs) for e in production.environments] == [
        ("prod_eu", "Production", ["argo_prod_eu"]),
        ("prod_us", "Production", ["argo_prod_us"]),
    ]
    assert production.service_refs == ["checkout"]
    # Known now: the pipeline variable. Not yet: the approver input the approval itself will set.
    assert production.custom_metadata == {
        "changeTicket": "CHG-1042",
        "rolloutSpeed": "<+pipeline.stages.staging_blue_green.spec.execution.steps.approve_rollout.output."
        "approverInputs.rollout_speed>",
    }
    assert request.current_stage.artifacts[0].tag == "2.0.0" and request.current_stage.artifacts[0].service_ref == (
        "checkout"
    )


def test_filter_details_travel_in_the_approval_request(catalog: Catalog) -> None:
    rollout = parse_pipeline((EXAMPLES / "pipelines" / "filtered-rollout.yaml").read_text(), catalog=catalog)
    execution = Execution.start(
        rollout, execution_id="ex-3", sequence_id=1, triggered_by=TriggeredBy(name="Ada"), now=T0, catalog=catalog
    )
    request = approval_requested(_at_approval(execution).request, ADA)
    production, gitops = request.upcoming_stages
    # The targets the filters chose...
    assert [(e.ref, e.infrastructure_refs) for e in production.environments] == [
        ("prod_eu", ["eks_eu"]),
        ("prod_us", ["eks_us"]),
    ]
    # ...and the filters themselves: entities, tags and match type (the expression rendered from the variable).
    (env_filter,) = production.environment_filters
    assert env_filter.model_dump(mode="json", exclude_none=True) == {
        "type": "tags",
        "entities": ["environments"],
        "match_type": "any",
        "tags": {"region": "eu", "tier": "prod"},
    }
    assert [f.model_dump(mode="json", exclude_none=True) for f in production.environments[0].filters] == [
        {"type": "tags", "entities": ["infrastructures"], "match_type": "all", "tags": {"traffic": "live"}}
    ]
    assert [(e.ref, e.gitops_cluster_refs, [f.tags for f in e.filters]) for e in gitops.environments] == [
        ("prod_eu", ["argo_prod_eu"], [{"traffic": "live"}]),
        ("prod_us", ["argo_prod_us"], [{"traffic": "live"}]),
    ]
    assert request.current_stage.environment_filters == []


def test_an_unresolved_filter_is_carried_with_its_expression_and_reason(catalog: Catalog) -> None:
    later = "<+pipeline.stages.d.spec.execution.steps.approve.output.approverInputs.region>"
    document = pipeline(
        deployment("d", approval("approve", approverInputs=[{"name": "region", "defaultValue": "eu"}])),
        stage(
            "prod",
            shell("roll_out"),
            type="Deployment",
            service={"serviceRef": "checkout"},
            environments={
                "filters": [
                    {
                        "type": "tags",
                        "entities": ["environments"],
                        "spec": {"matchType": "all", "tags": {"region": later}},
                    }
                ]
            },
        ),
    )
    request = approval_requested(_at_approval(_start(document, catalog)).request, ADA)
    (upcoming,) = request.upcoming_stages
    assert upcoming.environments == []
    (env_filter,) = upcoming.environment_filters
    assert env_filter.tags == {"region": later}
    assert env_filter.unresolved_reason == "stage 'd' has no step outputs yet"


# -- gate outcomes --------------------------------------------------------------------------------------------------

GATE_KEY = wire.GateKey(pipeline_id="test_pipeline", execution_id="ex-1", stage_id="d", step_id="approve", attempt=1)


def _vote(
    approver: str,
    comment: str,
    at: datetime,
    status: DecisionStatus = DecisionStatus.APPROVED,
    email: str | None = None,
) -> Vote:
    return Vote(
        decision_id=f"dec-{approver}",
        source="cli",
        approver=approver,
        approver_email=email,
        status=status,
        comment=comment,
        decided_at=at,
    )


def test_each_approval_activity_carries_its_own_votes_comment_and_time(catalog: Catalog) -> None:
    """Two approvers with different comments, deciding at different times: each activity is that vote's, not the
    comments joined at the time the executor processed the outcome."""
    ada_at, bob_at, processed = T0 + timedelta(minutes=5), T0 + timedelta(minutes=9), T0 + timedelta(hours=1)
    data = wire.GateApproved(
        gate_id="g1",
        key=GATE_KEY,
        cause=ApprovalCause.APPROVERS,
        votes=[
            _vote("ada", "ship it", ada_at, email="ada@example.com"),
            _vote("bob", "", bob_at),
            _vote("cy", "checked", bob_at),
        ],
        approved_at=processed - timedelta(minutes=1),
    )
    activities, comments = approved_by(data)
    assert comments is None
    assert [(a.approver.name, a.action, a.comments, a.decided_at) for a in activities] == [
        ("ada", "approve", "ship it", ada_at),
        ("bob", "approve", None, bob_at),
        ("cy", "approve", "checked", bob_at),
    ]

    execution = _start(pipeline(deployment("d", approval("approve"), shell("after"))), catalog)
    _at_approval(execution)
    assert execution.approval_approved("d.approve", data.inputs, activities, comments, now=processed)
    ctx = execution.context_for("d.after")
    steps = "<+pipeline.stages.d.spec.execution.steps.approve.output.approvalActivities"
    expected = {
        "[0].comments": "ship it",
        "[0].user.name": "ada",
        "[0].user.email": "ada@example.com",  # the gate's directory snapshot listed it
        "[0].action": "APPROVE",
        "[0].approvalAction": "APPROVE",  # Harness's name of it
        "[0].approvedAt": ada_at.isoformat(),
        "[1].comments": "",
        "[1].approvedAt": bob_at.isoformat(),
        "[2].comments": "checked",
        "[2].user.name": "cy",
    }
    assert {path: render(f"{steps}{path}>", ctx).text for path in expected} == expected
    # A voter the directory lists no e-mail of: it stays unknown, with the reason.
    email = render(f"{steps}[1].user.email>", ctx)
    assert email.unresolved and "no e-mail" in str(email.reasons)

    restored = Execution.from_dict(execution.to_dict())
    assert restored.step("d.approve").approval == execution.step("d.approve").approval


def test_a_rejection_is_the_rejecting_votes_with_its_own_time(catalog: Catalog) -> None:
    ada_at, bob_at = T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)
    data = wire.GateRejected(
        gate_id="g1",
        key=GATE_KEY,
        cause=RejectionCause.APPROVER,
        votes=[_vote("ada", "fine by me", ada_at), _vote("bob", "not today", bob_at, DecisionStatus.REJECTED)],
        rejected_by="bob",
        comment="not today",
        rejected_at=bob_at + timedelta(seconds=1),
    )
    activities, comment = rejected_by(data)
    assert comment == "not today"
    assert [(a.approver.name, a.action, a.comments, a.decided_at) for a in activities] == [
        ("bob", "reject", "not today", bob_at)
    ]
    execution = _start(pipeline(deployment("d", approval("approve"), shell("after"))), catalog)
    _at_approval(execution)
    assert execution.approval_rejected("d.approve", activities, comment, now=T0 + timedelta(hours=1))
    assert execution.reason == "approval d.approve was rejected by bob: not today"
    assert execution.step("d.approve").approval.activities == tuple(activities)  # type: ignore[union-attr]
    # An event naming the rejecter without their vote: the gate's rejection is when they decided.
    (without_vote,), _ = rejected_by(data.model_copy(update={"votes": []}))
    assert (without_vote.approver.name, without_vote.comments, without_vote.decided_at) == (
        "bob",
        "not today",
        data.rejected_at,
    )


def test_a_rejection_nobody_voted_names_nobody_and_says_what_rejected_it() -> None:
    at = T0 + timedelta(minutes=5)
    timeout = wire.GateRejected(gate_id="g1", key=GATE_KEY, cause=RejectionCause.TIMEOUT_ACTION, rejected_at=at)
    assert rejected_by(timeout) == ([], "the timeout action rejected it")
    superseded = wire.GateRejected(
        gate_id="g1", key=GATE_KEY, cause=RejectionCause.SUPERSEDED, superseded_by="g2", rejected_at=at
    )
    assert rejected_by(superseded) == ([], "superseded by gate g2")
