"""Notifications say what a stage's filters chose and why, per environment, and mark a filter not known yet."""

from __future__ import annotations

import html
import json
import re

from signoff.notifier.domain import ApprovalView
from signoff.notifier.domain.render import render_email, render_slack, render_teams, render_webhook

from .builders import NOW, PAGE, catalog, opened

ENV_FILTER = {
    "type": "tags",
    "entities": ["environments"],
    "match_type": "any",
    "tags": {"region": "eu", "tier": "prod"},
}
INFRA_FILTER = {"type": "tags", "entities": ["infrastructures"], "match_type": "all", "tags": {"traffic": "live"}}
LATER = "<+pipeline.stages.staging.spec.execution.steps.approve.output.approverInputs.region>"


def filtered_view() -> ApprovalView:
    stages = [
        {
            "identifier": "production_rollout",
            "name": "Production rollout",
            "type": "Deployment",
            "service_refs": ["checkout"],
            "environment_filters": [ENV_FILTER],
            "environments": [
                {"ref": "prod_eu", "infrastructure_refs": ["eks_eu"], "filters": [INFRA_FILTER]},
                {"ref": "prod_us", "infrastructure_refs": ["eks_us"], "filters": [INFRA_FILTER]},
            ],
        },
        {
            "identifier": "regional",
            "name": "Regional rollout",
            "type": "Deployment",
            "service_refs": ["checkout"],
            "environment_filters": [
                {
                    "type": "tags",
                    "entities": ["environments"],
                    "match_type": "all",
                    "tags": {"region": LATER},
                    "unresolved_reason": "stage 'staging' has no step outputs yet",
                }
            ],
        },
    ]
    return ApprovalView.from_gate_opened(opened(upcoming_stages=stages), catalog(), now=NOW, approval_page_url=PAGE)


def test_the_view_says_what_each_filter_chose_and_why() -> None:
    production, regional = filtered_view().upcoming_stages
    assert production.environment_filter is not None
    assert production.environment_filter.display() == (
        "Production EU, Production US (environments tagged region=eu OR tier=prod)"
    )
    assert [env.infrastructure_filter.display() for env in production.environments if env.infrastructure_filter] == [
        "EKS eu-west-1 (infrastructures tagged traffic=live)",
        "EKS us-east-1 (infrastructures tagged traffic=live)",
    ]
    assert production.environments[0].gitops_cluster_filter is None
    assert regional.environments == () and regional.environment_filter is not None
    assert not regional.environment_filter.resolved
    assert regional.environment_filter.display() == (
        f"unresolved filter: environments tagged region=(unresolved: {LATER}) (stage 'staging' has no step outputs yet)"
    )


def test_every_channel_lists_the_chosen_targets_and_the_filter() -> None:
    view = filtered_view()
    mail = render_email(view)
    slack = "\n".join(b["text"]["text"] for b in render_slack(view)["blocks"] if b["type"] == "section")
    card = render_teams(view)["attachments"][0]["content"]
    teams = re.sub(r"\\(.)", r"\1", "\n".join(block["text"] for block in card["body"]))
    webhook = json.loads(render_webhook(view).body)
    texts = {
        "email": mail.text,
        "html": html.unescape(mail.html),
        "slack": html.unescape(slack.replace("\u200b", "")),
        "teams": teams,
        "webhook": webhook["notification"]["text"],
    }
    for channel, text in texts.items():
        assert (
            "Environments by filter: Production EU, Production US (environments tagged region=eu OR tier=prod)" in text
        ), channel
        assert "Infrastructures by filter: EKS us-east-1 (infrastructures tagged traffic=live)" in text, channel
        assert "Environments by filter: unresolved filter: environments tagged region=(unresolved: <+" in text, channel
        for match in re.finditer(r"<\+", text):
            assert text[max(0, match.start() - 12) : match.start()].endswith("unresolved: "), channel
    # The webhook's data keeps the filter as the contract carries it, for machines.
    (stage, _) = webhook["upcoming_stages"]
    assert stage["environment_filters"][0]["tags"] == {"region": "eu", "tier": "prod"}
