"""Every overlay renders with the real kustomize, holds the objects an operator expects, and its references hold."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    Manifest,
    RenderError,
    by_kind,
    container_env,
    containers,
    one,
    pod_spec,
    render,
    workloads,
)
from tests.deploy.policy import selects

SERVICES = ("approval", "executor", "notifier", "api")
NAMESPACES = {"dev": "signoff-dev", "prod": "signoff"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
BASE_KINDS = Counter(
    {
        "Deployment": 4,
        "Service": 4,
        "ServiceAccount": 5,
        "NetworkPolicy": 5,
        "PodDisruptionBudget": 4,
        "Job": 1,
        "ConfigMap": 1,
        "KafkaTopic": 7,
        "KafkaUser": 7,
    }
)
# KEDA: a ScaledObject per service; a TriggerAuthentication per lag-scaled one (the api scales on CPU).
KEDA_KINDS = Counter({"ScaledObject": 4, "TriggerAuthentication": 3})
EXPECTED_KINDS = {"dev": BASE_KINDS + KEDA_KINDS, "prod": BASE_KINDS + KEDA_KINDS + Counter({"Ingress": 1})}


def test_base_renders_on_its_own() -> None:
    objects = render(DEPLOY / "base")
    kinds = Counter(o["kind"] for o in objects)
    assert kinds == BASE_KINDS


def test_a_broken_kustomization_is_reported(tmp_path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RenderError, match=r"missing\.yaml"):
        render(tmp_path)


def test_overlay_holds_every_object(objects: list[Manifest], overlay: str) -> None:
    assert Counter(o["kind"] for o in objects) == EXPECTED_KINDS[overlay]
    assert set(by_kind(objects, "Deployment")) == {f"signoff-{s}" for s in SERVICES}
    assert set(by_kind(objects, "Job")) == {"signoff-migrate"}


def test_overlay_sets_its_namespace(objects: list[Manifest], overlay: str) -> None:
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACES[overlay], obj["metadata"]["name"]


def test_overlay_labels_its_instance(objects: list[Manifest], overlay: str) -> None:
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == f"signoff-{overlay}"
    for workload in workloads(objects):
        assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == f"signoff-{overlay}"
        # Selectors are immutable: the instance label must stay out of them.
        assert "app.kubernetes.io/instance" not in workload["spec"].get("selector", {}).get("matchLabels", {})


def test_references_resolve(objects: list[Manifest]) -> None:
    """Names one object gives another exist in the render (kustomize rewrote the ConfigMap's hash suffix)."""
    config_maps, accounts = by_kind(objects, "ConfigMap"), by_kind(objects, "ServiceAccount")
    for workload in workloads(objects):
        spec = pod_spec(workload)
        assert spec["serviceAccountName"] in accounts, workload["metadata"]["name"]
        for c in containers(spec):
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in {v["name"] for v in spec.get("volumes", [])}


def test_services_reach_their_deployment(objects: list[Manifest]) -> None:
    deployments = by_kind(objects, "Deployment")
    for name, service in by_kind(objects, "Service").items():
        selector = {"matchLabels": service["spec"]["selector"]}  # a Service selects with a plain label map
        targets = [d for d in deployments.values() if selects(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert [t["metadata"]["name"] for t in targets] == [name], f"Service {name} selects the wrong pods"
        ports = {p["name"] for c in containers(pod_spec(targets[0])) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: targetPort {port['targetPort']} not a container port"


def test_selectors_match_their_pods(objects: list[Manifest]) -> None:
    deployments = by_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels), name
        budget = one(objects, "PodDisruptionBudget", name)
        assert selects(budget["spec"]["selector"], labels), name
        policy = one(objects, "NetworkPolicy", name)
        assert selects(policy["spec"]["podSelector"], labels), name
        others = [d for d in deployments.values() if d is not deployment]
        for other in others:  # a selector that also caught another service's pods would mix their budgets
            assert not selects(budget["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"])


def test_http_port_is_the_configured_one(objects: list[Manifest]) -> None:
    (config,) = by_kind(objects, "ConfigMap").values()
    port = int(config["data"]["SIGNOFF_HTTP_PORT"])
    for deployment in by_kind(objects, "Deployment").values():
        template = deployment["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        (container,) = template["spec"]["containers"]
        assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_dev_is_small(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["dev"]
    for deployment in by_kind(objects, "Deployment").values():
        assert deployment["spec"]["replicas"] == 1
    for topic in by_kind(objects, "KafkaTopic").values():
        assert topic["spec"]["replicas"] == 1
        assert topic["spec"]["config"]["min.insync.replicas"] == 1
    (config,) = by_kind(objects, "ConfigMap").values()
    assert config["data"]["SIGNOFF_LOG_LEVEL"] == "debug"


def test_prod_is_highly_available_and_secure(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["prod"]
    for name, deployment in by_kind(objects, "Deployment").items():
        assert deployment["spec"]["replicas"] == 3, name
        keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        budget = one(objects, "PodDisruptionBudget", name)["spec"]
        assert budget["minAvailable"] == 2 and "maxUnavailable" not in budget, name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"]["cpu"] == "250m"
    for topic in by_kind(objects, "KafkaTopic").values():
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2
    (config,) = by_kind(objects, "ConfigMap").values()
    wanted = {
        "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": "true",
        "SIGNOFF_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SIGNOFF_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SIGNOFF_KAFKA_CREATE_TOPICS": "false",
        "SIGNOFF_LOG_FORMAT": "json",
    }
    assert {key: config["data"].get(key) for key in wanted} == wanted


def test_migrations_can_be_applied_first(objects: list[Manifest]) -> None:
    """docs/deploying.md applies `-l app.kubernetes.io/component in (config,migrations)` before the services: that
    selection must hold the Job and everything it needs, and nothing else."""
    selected = {
        f"{o['kind']}/{o['metadata']['name'].rsplit('-', 1)[0] if o['kind'] == 'ConfigMap' else o['metadata']['name']}"
        for o in objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") in {"config", "migrations"}
    }
    assert selected == {
        "ConfigMap/signoff-config",
        "ServiceAccount/signoff-migrate",
        "NetworkPolicy/signoff-migrate",
        "Job/signoff-migrate",
    }


def test_kafka_resources_can_be_applied_first(objects: list[Manifest]) -> None:
    """docs/deploying.md applies `-l app.kubernetes.io/component=kafka` first: the topics and users, only."""
    selected = Counter(o["kind"] for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "kafka")
    assert selected == Counter({"KafkaTopic": 7, "KafkaUser": 7})


def test_the_executors_scripts_run_in_a_sidecar_that_holds_none_of_its_keys(objects: list[Manifest]) -> None:
    """docs/deploying.md, "What a pipeline's script can reach": the scripts' container shares only the runner's
    socket with the executor's, runs as another uid, and is given no Secret, no setting, no view of its processes."""
    spec = pod_spec(one(objects, "Deployment", "signoff-executor"))
    assert spec is not None
    [runner] = [c for c in spec.get("initContainers", []) if c["name"] == "script-runner"]
    [executor] = [c for c in spec["containers"] if c["name"] == "executor"]
    assert runner["restartPolicy"] == "Always"  # a native sidecar: up before the executor, down after it
    args = runner["args"]
    assert args[0] == "script-runner"
    socket = args[args.index("--socket") + 1]
    executor_uid = executor.get("securityContext", {}).get("runAsUser", spec["securityContext"]["runAsUser"])
    assert int(args[args.index("--client-uid") + 1]) == executor_uid  # it serves the executor, not its scripts
    assert container_env(objects, executor)["SIGNOFF_SCRIPT_RUNNER_SOCKET"] == socket

    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    runner_mounts = {m["name"]: m["mountPath"] for m in runner["volumeMounts"]}
    executor_mounts = {m["name"]: m["mountPath"] for m in executor["volumeMounts"]}
    [shared] = set(runner_mounts) & set(executor_mounts)
    assert socket.startswith(runner_mounts[shared] + "/") and runner_mounts[shared] == executor_mounts[shared]
    assert all(set(volumes[name]) == {"name", "emptyDir"} for name in runner_mounts)  # no Secret, no projection
    assert "secrets" in executor_mounts and not runner.get("envFrom")
    assert all("valueFrom" not in variable for variable in runner.get("env", []))
    assert not spec.get("shareProcessNamespace")
    runner_uid = runner["securityContext"]["runAsUser"]
    assert runner_uid not in (
        0,
        executor.get("securityContext", {}).get("runAsUser", spec["securityContext"]["runAsUser"]),
    )


def test_metrics_are_scraped_from_the_monitoring_namespace_only(objects: list[Manifest]) -> None:
    """The http port (/metrics, /healthz, /readyz) admits the namespace `monitoring`, not every pod of the cluster."""
    scraped = set()
    for name, policy in by_kind(objects, "NetworkPolicy").items():
        for rule in policy["spec"].get("ingress", []):
            if any(port.get("port") == "http" for port in rule.get("ports", [])):
                assert rule.get("from") == [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                ], name
                scraped.add(name)
    assert scraped == {f"signoff-{service}" for service in SERVICES}
