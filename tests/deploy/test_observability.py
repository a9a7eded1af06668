"""The operations pack (deploy/observability): the PrometheusRule passes `promtool check rules`, and the rules and
the Grafana dashboard only use metrics the code exports; the metrics table of docs/deploying.md lists them all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, REPO
from tests.support.promtool import PROMQL_NAME, check_metrics, exported_families, exported_series_names, promtool

OBSERVABILITY = DEPLOY / "observability"
RULE = OBSERVABILITY / "prometheusrule.yaml"
DASHBOARD = OBSERVABILITY / "dashboard.json"
# What the issue asks the dashboard to show, as the series its panels must query.
DASHBOARD_MUST_USE = {
    "signoff_gates_pending",  # pending gates
    "signoff_gate_wait_seconds_bucket",  # time to decide, by pipeline
    "signoff_decisions_refused_total",  # refusals by reason
    "signoff_consumer_lag_records",
    "signoff_outbox_backlog_rows",
    "signoff_events_dead_lettered_total",
    "signoff_notifier_deliveries_retried_total",  # notification failures by channel
    "signoff_notifier_deliveries_dead_lettered_total",
}
ALERTS = {
    "SignoffConsumerLagGrowing",
    "SignoffOutboxBacklog",
    "SignoffDeadLetters",
    "SignoffEventsQuarantined",
    "SignoffGatesAboutToExpireUnanswered",
    "SignoffNotifierChannelFailing",
    "SignoffNotificationsGivenUp",
}


def rule() -> dict:
    return yaml.safe_load(RULE.read_text())


def dashboard_expressions() -> list[str]:
    def targets(panels: list[dict]) -> list[str]:
        found = []
        for panel in panels:
            found += [target["expr"] for target in panel.get("targets", [])]
            found += targets(panel.get("panels", []))
        return found

    return targets(json.loads(DASHBOARD.read_text())["panels"])


def rule_expressions() -> dict[str, str]:
    return {r["alert"]: r["expr"] for group in rule()["spec"]["groups"] for r in group["rules"]}


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    document = rule()
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups = tmp_path / "rules.yaml"
    groups.write_text(yaml.safe_dump(document["spec"]))  # promtool reads a rule file: the groups alone
    done = promtool("check", "rules", str(groups))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout, done.stdout
    assert set(rule_expressions()) == ALERTS


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses a rule whose PromQL does not parse."""
    broken = rule()["spec"]
    broken["groups"][0]["rules"][0]["expr"] = "sum by (consumer (signoff_consumer_lag_records)"
    groups = tmp_path / "rules.yaml"
    groups.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", str(groups)).returncode != 0


def test_the_rules_and_the_dashboard_use_only_exported_metrics() -> None:
    exported = exported_series_names()
    used = {
        where: set(PROMQL_NAME.findall(expr))
        for where, expr in [*rule_expressions().items(), *enumerate(dashboard_expressions())]
    }
    unknown = {where: names - exported for where, names in used.items() if names - exported}
    assert not unknown, f"metrics no role exports: {unknown}"
    assert all(used.values()), "an expression that names no signoff metric"
    dashboard = set().union(*(PROMQL_NAME.findall(expr) for expr in dashboard_expressions()))
    assert dashboard >= DASHBOARD_MUST_USE, DASHBOARD_MUST_USE - dashboard


def test_the_exported_metrics_pass_promtools_lint() -> None:
    from prometheus_client import REGISTRY, generate_latest

    exported_families()  # every metrics module imported
    assert check_metrics(generate_latest(REGISTRY).decode()) == ""
    assert "counter metrics should have" in check_metrics("# HELP x_c A counter.\n# TYPE x_c counter\nx_c 1\n")


def test_every_exported_metric_is_documented() -> None:
    documented = (REPO / "docs" / "deploying.md").read_text()
    missing = [
        name + ("_total" if kind == "counter" else "")
        for name, kind in exported_families().items()
        if f"`{name}{'_total' if kind == 'counter' else ''}`" not in documented
    ]
    assert not missing, f"docs/deploying.md, Metrics: {missing}"


def _failing_channel_alerts(tmp_path: Path, series: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of SignoffNotifierChannelFailing over SERIES (name{labels} -> values), expecting it
    to fire for channel "teams" alone after 40 minutes of those series."""
    groups = tmp_path / "rules.yaml"
    groups.write_text(yaml.safe_dump(rule()["spec"]))
    fired = {
        "exp_labels": {"severity": "warning", "namespace": "signoff", "channel": "teams"},
        "exp_annotations": {
            "summary": "signoff notifier channel teams fails every delivery",
            "description": "No delivery on teams succeeded in 15 minutes while tries failed: check the channel's "
            "URL, credentials (secret_ref) and the notifier's `delivery_retry_scheduled` logs.",
        },
    }
    case = {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [{"eval_time": "40m", "alertname": "SignoffNotifierChannelFailing", "exp_alerts": [fired]}],
    }
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [groups.name], "evaluation_interval": "1m", "tests": [case]}))
    return promtool("test", "rules", str(tests))


@pytest.mark.parametrize(
    "failures",
    [
        pytest.param(["dead_lettered"], id="only-permanent-failures"),
        pytest.param(["retried"], id="only-retried"),
        pytest.param(["retried", "dead_lettered"], id="both"),
    ],
)
def test_a_channel_that_fails_every_delivery_raises_the_alert(tmp_path: Path, failures: list[str]) -> None:
    """A deleted webhook answers 404 to every try: only `dead_lettered` grows, and the alert must still fire. A
    channel that also delivers ("slack") must not."""
    labels = 'namespace="signoff",pod="signoff-notifier-0"'
    series = {f'signoff_notifier_deliveries_{kind}_total{{{labels},channel="teams"}}': "0+2x60" for kind in failures}
    series[f'signoff_notifier_deliveries_dead_lettered_total{{{labels},channel="slack"}}'] = "0+1x60"
    series[f'signoff_notifier_deliveries_sent_total{{{labels},channel="slack"}}'] = "0+5x60"
    done = _failing_channel_alerts(tmp_path, series)
    assert done.returncode == 0, done.stdout + done.stderr
