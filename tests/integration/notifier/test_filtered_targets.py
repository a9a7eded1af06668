"""A pipeline whose production targets are chosen by filter reaches its approval step on the real executor role;
the notifier role, given the gate, tells the webhook sink which targets the filters chose and why."""

from __future__ import annotations

import pytest

from signoff import contracts as wire
from signoff.contracts.events import FilterEntity, FilterMatchType
from tests.integration.executor.conftest import REPO, ExecutorRole, execution_request, gate_opened
from tests.integration.notifier.conftest import NotifierHarness, signature_ok
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

FILTERED = REPO / "examples" / "pipelines" / "filtered-rollout.yaml"


async def test_a_filtered_rollout_notifies_the_chosen_targets_and_the_filter(
    settings, names, database_url, notifier: NotifierHarness
) -> None:
    executor = ExecutorRole(settings, names, database_url)
    await executor.start()
    try:
        await notifier.start()
        request = execution_request(
            FILTERED.read_text(), pipeline_id="checkout_filtered_rollout", variables={"traffic": "live"}
        )
        await executor.send(request)
        approval = await executor.wait_for(wire.ApprovalRequested.event_type, request.execution_id)
        await executor.wait_step(request.execution_id, "staging.approve_production", "WAITING_APPROVAL")

        # What the executor asked for: the targets the filters chose, and the filters.
        production, _ = approval.upcoming_stages
        assert [(e.ref, e.infrastructure_refs) for e in production.environments] == [
            ("prod_eu", ["eks_eu"]),
            ("prod_us", ["eks_us"]),
        ]
        assert [(f.entities, f.match_type, f.tags) for f in production.environment_filters] == [
            ([FilterEntity.ENVIRONMENTS], FilterMatchType.ANY, {"region": "eu", "tier": "prod"})
        ]

        # As the approval service opens it: the gate, with the docs group's member it may notify.
        dana = {"user": "dana", "name": "Dana", "email": "dana@example.com", "groups": ["docs"]}
        opened = wire.GateOpened.model_validate(
            {**gate_opened(approval).model_dump(exclude_none=True), "eligible_approvers": [dana]}
        )
        await notifier.publish(opened)

        async def hook_hit():
            return next(iter(notifier.http.accepted["hook"].values()), None)

        hit = await eventually(hook_hit, timeout=60, what="the webhook notification")
        assert signature_ok(hit)
        body = hit.json()
        text = body["notification"]["text"]
        assert "Upcoming stage: Production rollout (Deployment)" in text
        assert (
            "Environments by filter: Production EU, Production US (environments tagged region=eu OR tier=prod)" in text
        )
        assert "Infrastructures by filter: EKS eu-west-1 (infrastructures tagged traffic=live)" in text
        assert "Infrastructures by filter: EKS us-east-1 (infrastructures tagged traffic=live)" in text
        assert "GitOps clusters by filter: Argo CD production US (GitOps clusters tagged traffic=live)" in text
        # The data carries the filters as the contract has them, for machines.
        assert body["upcoming_stages"][0]["environment_filters"][0]["tags"] == {"region": "eu", "tier": "prod"}
        assert body["upcoming_stages"][0]["environments"][1]["filters"][0]["tags"] == {"traffic": "live"}
    finally:
        await executor.stop()
