"""Every role's /metrics after a journey, scraped from the separate role processes of `signoff dev up` at the
addresses it writes for Prometheus (prometheus-targets.json): each exposition passes `promtool check metrics`, and
the approval and api roles count the journey's gate, refusal, vote and outcome exactly.

This module has a dev stack of its own (its `system` fixture, not the shared one), so the counts are this journey's."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from signoff.cli.dev import SCRAPE_TARGETS_FILE
from signoff.cli.roles import ROLES
from tests.e2e.conftest import System, running_system
from tests.support.promtool import check_metrics
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

PIPELINE = "e2e_metrics"


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    with running_system() as running:
        yield running


def targets(system: System) -> dict[str, str]:
    """role -> its /metrics URL, from the file_sd targets `dev up` wrote."""
    listed = json.loads((system.work / "dev" / SCRAPE_TARGETS_FILE).read_text())
    return {entry["labels"]["role"]: f"http://{entry['targets'][0]}/metrics" for entry in listed}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a loopback URL of the dev stack
        assert answer.status == 200
        return answer.read().decode()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float | None:
    return samples(exposition).get((name, frozenset(labels.items())))


def test_every_role_exports_clean_metrics_and_the_journey_is_counted(system: System) -> None:
    urls = targets(system)
    assert set(urls) == set(ROLES)
    approval, api = urls["approval"], urls["api"]

    path = system.pipeline("metrics", renames={"checkout_blue_green": PIPELINE})
    execution_id = system.signoff("run", str(path), "--var", "tag=2.0.0", user="alice").stdout.strip()
    waiting = system.waiting_approval(PIPELINE)
    gate_id, token = waiting["externalExecutionId"], waiting["token"]
    eventually_sync(
        lambda: value(scrape(approval), "signoff_gates_pending") == 1, timeout=60, what="one pending gate counted"
    )

    bob = system.signoff("approve", gate_id, "--token", token, user="bob", check=False)  # sre, not docs
    assert bob.returncode == 1 and "not_eligible" in bob.stderr, (bob.stdout, bob.stderr)
    system.signoff("approve", gate_id, "--token", token, user="dana")
    system.wait_status(execution_id, "SUCCEEDED")
    eventually_sync(
        lambda: value(scrape(approval), "signoff_gates_pending") == 0, timeout=60, what="no pending gate counted"
    )

    expositions = {role: scrape(url) for role, url in urls.items()}
    problems = {role: check_metrics(text) for role, text in expositions.items()}
    assert not any(problems.values()), problems
    own = {
        "approval": "signoff_gate",
        "executor": "signoff_executor_",
        "notifier": "signoff_notifier_",
        "api": "signoff_api_",
    }
    for role, text in expositions.items():  # each role's own metrics, beside the runtime's
        assert any(name.startswith(own[role]) for name, _ in samples(text)), role
        if role != "api":  # the api publishes decisions and requests, and consumes nothing
            assert any(name == "signoff_events_consumed_total" for name, _ in samples(text)), role

    counted = expositions["approval"]
    assert value(counted, "signoff_gates_opened_total") == 1
    assert value(counted, "signoff_gate_outcomes_total", outcome="approved") == 1
    assert value(counted, "signoff_decisions_total", status="approved", source="api") == 1
    assert value(counted, "signoff_decisions_refused_total", reason="not_eligible") == 1
    assert value(counted, "signoff_gates_expiring_soon") == 0
    # The stage deploys to Staging, a PreProduction environment of the catalog.
    waited = {"outcome": "approved", "pipeline": PIPELINE, "environment_type": "preproduction"}
    assert value(counted, "signoff_gate_wait_seconds_count", **waited) == 1
    assert value(counted, "signoff_gate_wait_seconds_bucket", **waited, le="604800.0") == 1

    relayed = expositions["api"]
    assert value(relayed, "signoff_api_decisions_total", source="api", status="approved", verdict="counted") == 1
    assert value(relayed, "signoff_api_decisions_total", source="api", status="approved", verdict="refused") == 1
    assert value(relayed, "signoff_api_decisions_refused_total", reason="not_eligible") == 1
    assert value(scrape(api), "signoff_gates_opened_total") is None  # the api counts what it relays, not gates
