"""A multi-service, multi-environment GateOpened over the example catalog, and the other gate events."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signoff.catalog import Catalog
from signoff.contracts.events import GateOpened, GateRejected, RequestRefused
from signoff.notifier.domain import ApprovalView, OutcomeView
from signoff.notifier.domain.view import NotificationView

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_EVENTS = REPO / "examples" / "events"
NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
PAGE = "https://signoff.example.com/"

INJECTIONS = ("<script>alert(1)</script>", "<!channel>", "*bold*", "[x](http://evil)", "&amp;")


def catalog() -> Catalog:
    return Catalog.load(REPO / "examples" / "catalog.yaml")


def example_data(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLE_EVENTS / f"{name}.json").read_text())["data"]


def opened_data(**changes: Any) -> dict[str, Any]:
    """GateOpened data: current stage deploys checkout to staging; the next stage deploys checkout,
    payments_worker and an expression service to the production group (prod_eu, prod_us); a GitOps stage follows."""
    data = copy.deepcopy(example_data("io.signoff.gate.opened.v1"))
    data["current_stage"] = {
        "identifier": "deploy_staging",
        "name": "Deploy to staging",
        "type": "Deployment",
        "service_refs": ["checkout"],
        "environments": [{"ref": "staging", "infrastructure_refs": ["staging_k8s"]}],
        "artifacts": [
            {
                "service_ref": "checkout",
                "image": "registry.example.com/checkout",
                "tag": "1.4.2",
                "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            }
        ],
    }
    data["upcoming_stages"] = [
        {
            "identifier": "deploy_prod",
            "name": "Deploy to production",
            "type": "Deployment",
            "service_refs": ["checkout", "payments_worker", "<+pipeline.variables.svc>", "ghost_service"],
            "environment_group_ref": "production",
            "environments": [
                {"ref": "prod_eu", "type": "Production", "infrastructure_refs": ["eks_eu"]},
                {"ref": "prod_us", "infrastructure_refs": ["eks_us", "<+pipeline.variables.us_infra>"]},
            ],
            "artifacts": [
                {
                    "service_ref": "payments_worker",
                    "image": "registry.example.com/payments-worker",
                    "tag": "<+artifact.tag>",
                }
            ],
            "custom_metadata": {"change_ticket": "CHG-1042", "window": "<+pipeline.variables.window>"},
        },
        {
            "identifier": "sync_gitops",
            "name": "Sync GitOps clusters",
            "type": "Deployment",
            "service_refs": ["storefront"],
            "environments": [{"ref": "prod_eu", "gitops_cluster_refs": ["argo_prod_eu"]}],
        },
    ]
    data["message"] = "Release 1.4.2 to <+pipeline.variables.region> please"
    data.update(changes)
    return data


def opened(**changes: Any) -> GateOpened:
    return GateOpened.model_validate(opened_data(**changes))


def hard_views() -> list[NotificationView]:
    """Views that push the renderers' limits: many stages, long and entity-heavy text, injections, an outcome,
    a refused request."""
    base = opened()
    many = [base.upcoming_stages[0].model_copy(update={"identifier": f"s{i}", "name": f"Stage {i}"}) for i in range(80)]
    events = [
        base,
        opened(message="\n".join(f"line {i} " + "x" * 80 for i in range(200))),
        opened(custom_data={"blob": "<&>" * 2700}),
        base.model_copy(update={"upcoming_stages": many}),
        base.model_copy(update={"pipeline_name": "R&D " + "&" * 140, "stage_name": "<deploy> & <verify>"}),
        base.model_copy(update={"message": " ".join(INJECTIONS)}),
    ]
    views: list[NotificationView] = [
        ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE) for event in events
    ]
    rejected = GateRejected.model_validate(example_data("io.signoff.gate.rejected.v1"))
    views.append(OutcomeView.from_event(rejected, approval_page_url=PAGE, opened=events[4]))
    refused = RequestRefused.model_validate(example_data("io.signoff.gate.request_refused.v1"))
    views.append(OutcomeView.from_event(refused, approval_page_url=PAGE))
    return views
