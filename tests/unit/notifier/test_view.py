"""ApprovalView / OutcomeView: catalog resolution of every kind of CD metadata, unresolved items, links, time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signoff.contracts.envelope import new_event
from signoff.contracts.events import EnvironmentRef, GateApproved, GateCancelled, GateExpired, GateRejected
from signoff.notifier.domain import ApprovalView, OutcomeView, humanize_time_left, mark_expressions
from signoff.notifier.domain.view import expression_parts

from .builders import NOW, PAGE, catalog, example_data, opened


@pytest.fixture(scope="module")
def view() -> ApprovalView:
    return ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)


def test_current_stage_resolves_service_environment_infrastructure_and_artifact(view: ApprovalView) -> None:
    stage = view.current_stage
    assert (stage.position, stage.name) == ("current", "Deploy to staging")
    assert [s.text for s in stage.services] == ["Checkout API"]
    assert [link.name for link in stage.services[0].links] == ["Repository", "Runbook"]
    env = stage.environments[0]
    assert (env.environment.text, env.type) == ("Staging", "PreProduction")  # type from the catalog
    infra = env.infrastructures[0]
    assert infra.text == "Staging cluster"
    assert ("namespace", "shop") in infra.details and ("cluster", "staging-1") in infra.details
    assert infra.links[0].url == "https://grafana.example.com/d/k8s-workloads?var-cluster=staging-1&var-namespace=shop"
    artifact = stage.artifacts[0]
    assert artifact.display() == (
        "registry.example.com/checkout:1.4.2@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    assert artifact.service is not None and artifact.service.text == "Checkout API"


def test_upcoming_stages_resolve_multi_service_multi_environment_group_and_gitops(view: ApprovalView) -> None:
    prod, gitops = view.upcoming_stages
    assert [s.display() for s in prod.services] == [
        "Checkout API",
        "Payments worker",
        "unresolved: <+pipeline.variables.svc> (not known until stage Deploy to production runs)",
        "unresolved: ghost_service (service not in the catalog)",
    ]
    assert prod.environment_group is not None and prod.environment_group.text == "All production regions"
    assert ("environments", "Production EU, Production US") in prod.environment_group.details
    assert [(e.environment.text, e.type) for e in prod.environments] == [
        ("Production EU", "Production"),
        ("Production US", "Production"),
    ]
    us = prod.environments[1]
    assert [i.display() for i in us.infrastructures] == [
        "EKS us-east-1",
        "unresolved: <+pipeline.variables.us_infra> (not known until stage Deploy to production runs)",
    ]
    tag = prod.artifacts[0].tag
    assert tag is not None and not tag.resolved and tag.raw == "<+artifact.tag>"
    assert dict(prod.custom_metadata)["change_ticket"].display() == "CHG-1042"
    assert not dict(prod.custom_metadata)["window"].resolved
    cluster = gitops.environments[0].gitops_clusters[0]
    assert cluster.text == "Argo CD production EU"
    assert cluster.links[0].url == "https://argocd.prod-eu.example.com"


def test_every_unresolved_item_is_labelled_never_blank(view: ApprovalView) -> None:
    raws = [item.raw for item in view.unresolved()]
    assert "<+pipeline.variables.svc>" in raws and "ghost_service" in raws and "<+artifact.tag>" in raws
    for item in view.unresolved():
        assert item.display().startswith("unresolved: ") and item.reason


def test_expression_in_current_stage_gets_the_catalog_reason() -> None:
    data = opened()
    current = data.current_stage.model_copy(update={"service_refs": ["<+service.name>"]})
    view = ApprovalView.from_gate_opened(
        data.model_copy(update={"current_stage": current}), catalog(), now=NOW, approval_page_url=PAGE
    )
    assert view.current_stage.services[0].display() == (
        "unresolved: <+service.name> (expression not resolved at this point of the pipeline)"
    )


def test_message_marks_expressions_and_links_encode_the_gate_id(view: ApprovalView) -> None:
    assert view.message == "Release 1.4.2 to (unresolved: <+pipeline.variables.region>) please"
    assert view.approve_url == "https://signoff.example.com/gates/gate-5d0c6f0e?action=approve"
    assert view.reject_url.endswith("?action=reject")
    odd = ApprovalView.from_gate_opened(
        opened(gate_id="g?x=1&y#z"), catalog(), now=NOW, approval_page_url="https://s.example.com"
    )
    assert odd.approve_url == "https://s.example.com/gates/g%3Fx%3D1%26y%23z?action=approve"


def test_policy_history_time_left_and_event_id(view: ApprovalView) -> None:
    assert view.policy.rules == ("1 approval from group docs",)
    assert view.time_left == "23h 30m left"
    assert [line.display() for line in view.history] == [
        "Build: succeeded (took 8m)",
        "Deploy to staging / Rolling deployment: succeeded (took 10m)",
    ]
    assert view.event_id == "io.signoff.gate.opened.v1/gate-5d0c6f0e"
    wrapped = new_event(opened(), source="urn:signoff:approval", id="evt-1", time=NOW)
    assert ApprovalView.from_gate_opened(wrapped, catalog(), now=NOW, approval_page_url=PAGE).event_id == "evt-1"


def test_policy_with_rules_and_executor_constraint() -> None:
    policy = {
        "user_groups": ["qa"],
        "minimum_count": 1,
        "disallow_pipeline_executor": True,
        "rules": [{"user_groups": ["sre"], "users": ["dave"], "minimum_count": 2}],
    }
    view = ApprovalView.from_gate_opened(opened(policy=policy), catalog(), now=NOW, approval_page_url=PAGE)
    assert view.policy.rules == ("1 approval from group qa", "2 approvals from group sre or user dave")
    assert "alice (who triggered the pipeline) may not approve" in view.policy.constraints


@pytest.mark.parametrize(
    ("action", "said"),
    [
        ("approve", "on timeout the gate is approved automatically"),
        ("reject", "on timeout the gate is rejected automatically"),
    ],
)
def test_a_timeout_action_is_said_in_words(action: str, said: str) -> None:
    view = ApprovalView.from_gate_opened(opened(timeout_action=action), catalog(), now=NOW, approval_page_url=PAGE)
    assert said in view.policy.constraints
    failing = ApprovalView.from_gate_opened(opened(timeout_action="fail"), catalog(), now=NOW, approval_page_url=PAGE)
    assert not any("on timeout" in constraint for constraint in failing.policy.constraints)


@pytest.mark.parametrize(
    ("left", "text"),
    [
        (timedelta(days=2, hours=3, minutes=5), "2d 3h left"),
        (timedelta(minutes=45, seconds=59), "45m left"),
        (timedelta(seconds=30), "less than a minute left"),
        (timedelta(0), "expired"),
        (timedelta(hours=-1), "expired"),
    ],
)
def test_humanize_time_left(left: timedelta, text: str) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert humanize_time_left(now + left, now) == text


def test_expression_parts_cut_prose_from_expressions() -> None:
    assert expression_parts("a <+x.<+y>> b <+z") == [("a ", False), ("<+x.<+y>>", True), (" b ", False), ("<+z", True)]
    assert expression_parts("") == [] and expression_parts("plain") == [("plain", False)]


def test_mark_expressions_handles_nesting_and_unterminated() -> None:
    assert mark_expressions("a <+x.<+y>> b") == "a (unresolved: <+x.<+y>>) b"
    assert mark_expressions("tail <+open") == "tail (unresolved: <+open)"
    assert mark_expressions("no expressions") == "no expressions"


@pytest.mark.parametrize(
    ("name", "model", "kind", "headline"),
    [
        ("io.signoff.gate.approved.v1", GateApproved, "approved", "Approved: Payments release"),
        ("io.signoff.gate.rejected.v1", GateRejected, "rejected", "Rejected: Payments release"),
        ("io.signoff.gate.expired.v1", GateExpired, "expired", "Expired: Payments release"),
        ("io.signoff.gate.cancelled.v1", GateCancelled, "cancelled", "Cancelled: Payments release"),
    ],
)
def test_outcome_views(name: str, model: type, kind: str, headline: str) -> None:
    event = model.model_validate(example_data(name))
    view = OutcomeView.from_event(event, approval_page_url=PAGE, opened=opened())
    assert view.kind == kind and view.headline.startswith(headline)
    assert view.gate_url == "https://signoff.example.com/gates/gate-5d0c6f0e"
    assert view.event_id == f"{name}/gate-5d0c6f0e"
    bare = OutcomeView.from_event(event, approval_page_url=PAGE)
    assert bare.pipeline_name == "payments_release"  # identifiers when the opened event is not known


def test_rejected_outcome_names_who_and_why() -> None:
    event = GateRejected.model_validate(example_data("io.signoff.gate.rejected.v1"))
    view = OutcomeView.from_event(event, approval_page_url=PAGE)
    assert view.details == ("by carol", "comment: Error rate on staging is up.")


def test_infrastructures_of_an_unknown_environment_are_not_guessed() -> None:
    base = opened()
    current = base.current_stage.model_copy(
        update={"environments": [EnvironmentRef(ref="ghost_env", infrastructure_refs=["eks_eu"])]}
    )
    view = ApprovalView.from_gate_opened(
        base.model_copy(update={"current_stage": current}), catalog(), now=NOW, approval_page_url=PAGE
    )
    env = view.current_stage.environments[0]
    assert env.environment.display() == "unresolved: ghost_env (environment not in the catalog)"
    assert env.infrastructures[0].display() == "unresolved: eks_eu (its environment ghost_env is not resolved)"


def test_restated_view_for_reminders(view: ApprovalView) -> None:
    later = view.restated(now=NOW + timedelta(hours=23), headline="Reminder: approval needed", purpose="reminder:1h")
    assert later.time_left == "30m left" and later.headline == "Reminder: approval needed"
    assert later.approve_url == view.approve_url and later.event_id == view.event_id
