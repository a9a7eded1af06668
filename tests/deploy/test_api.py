"""The api role on Kubernetes: the port it serves the API on, who may reach that port, the Ingress in front of it,
and how it scales. Copies of the render with one thing broken show each check catches what it is for."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from signoff.api.settings import ApiSettings
from tests.deploy.manifests import (
    REPO,
    Manifest,
    by_kind,
    container_env,
    edit_copy,
    kubernetes_versions,
    one,
    pod_spec,
    render,
    validate_all,
)
from tests.deploy.policy import pod_labels, scan, selects
from tests.deploy.test_settings import settings_refusals

API = "signoff-api"
# The namespace of the ingress controller of overlays/prod/ingress.yaml (ingressClassName nginx).
INGRESS_CONTROLLER_NAMESPACE = "ingress-nginx"
# Who may open the API port: the ingress controller's pods and the pods of signoff's own namespace.
API_PEERS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": INGRESS_CONTROLLER_NAMESPACE}}},
    {"podSelector": {}},
]
NGINX_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def api_container(objects: list[Manifest]) -> tuple[Manifest, dict[str, str | None]]:
    (container,) = pod_spec(one(objects, "Deployment", API))["containers"]
    return container, container_env(objects, container)


def api_port(objects: list[Manifest]) -> int:
    _, env = api_container(objects)
    return int(env["SIGNOFF_API_PORT"])


def test_the_api_listens_on_its_container_port(objects: list[Manifest]) -> None:
    """SIGNOFF_API_PORT is the container port http-api, which the Service publishes on port 80."""
    container, _ = api_container(objects)
    assert {"name": "http-api", "containerPort": api_port(objects), "protocol": "TCP"} in container["ports"]
    service = one(objects, "Service", API)["spec"]
    assert {"name": "http-api", "port": 80, "targetPort": "http-api", "protocol": "TCP"} in service["ports"]


# ---- who reaches the API port --------------------------------------------------------------------------------


def _opens(rule: Manifest, port_name: str, port: int) -> bool:
    """An ingress rule lets traffic to this port through (a rule without ports opens every port)."""
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (port_name, port) for p in ports)


def api_port_rules(objects: list[Manifest]) -> list[Manifest]:
    """The ingress rules, over every NetworkPolicy selecting the api's pods, that open the API port."""
    labels = pod_labels(one(objects, "Deployment", API))
    port = api_port(objects)
    return [
        rule
        for policy in by_kind(objects, "NetworkPolicy").values()
        if selects(policy["spec"].get("podSelector") or {}, labels)
        for rule in policy["spec"].get("ingress") or []
        if _opens(rule, "http-api", port)
    ]


def test_only_the_ingress_controller_and_the_namespace_reach_the_api(objects: list[Manifest]) -> None:
    assert api_port_rules(objects) == [{"from": API_PEERS, "ports": [{"port": "http-api", "protocol": "TCP"}]}]


@pytest.mark.parametrize(
    ("what", "mutate"),
    [
        ("the port by number, from anywhere", lambda rules: rules.append({"ports": [{"port": 8000}]})),
        ("the metrics rule without ports: every port", lambda rules: rules[1].pop("ports")),
        ("any namespace", lambda rules: rules[0]["from"][0].update(namespaceSelector={})),
    ],
)
def test_an_api_port_open_to_others_is_caught(rendered: dict[str, list[Manifest]], what: str, mutate) -> None:
    objects = copy.deepcopy(rendered["prod"])
    mutate(one(objects, "NetworkPolicy", API)["spec"]["ingress"])
    assert api_port_rules(objects) != [{"from": API_PEERS, "ports": [{"port": "http-api", "protocol": "TCP"}]}]


def test_the_api_egress_reaches_the_oidc_issuer(objects: list[Manifest]) -> None:
    """JWKS and discovery over HTTPS; the other egress rules (DNS, PostgreSQL, brokers) are every role's."""
    egress = one(objects, "NetworkPolicy", API)["spec"]["egress"]
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in egress


# ---- the Ingress (prod) --------------------------------------------------------------------------------------


def nginx_size(value: str) -> int:
    """ingress-nginx's size notation (`1m`, `512k`) in bytes."""
    number, unit = (value[:-1], value[-1].lower()) if value[-1].isalpha() else (value, "")
    return int(number) * NGINX_UNITS[unit]


def ingress_problems(objects: list[Manifest]) -> list[str]:
    (ingress,) = by_kind(objects, "Ingress").values()
    spec, annotations = ingress["spec"], ingress["metadata"].get("annotations") or {}
    service_ports = {p["name"] for p in one(objects, "Service", API)["spec"]["ports"]}
    problems = []
    hosts = set()
    for rule in spec["rules"]:
        hosts.add(rule["host"])
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            if backend["name"] != API or backend["port"] != {"name": "http-api"} or "http-api" not in service_ports:
                problems.append(f"{rule['host']}{path['path']} is routed to {backend}, not {API}:http-api")
    tls_hosts = {host for tls in spec.get("tls", []) if tls.get("secretName") for host in tls["hosts"]}
    if hosts - tls_hosts:
        problems.append(f"hosts without TLS: {sorted(hosts - tls_hosts)}")

    _, env = api_container(objects)
    public = urlsplit(env["SIGNOFF_API_PUBLIC_URL"])
    if public.scheme != "https" or {public.hostname} != hosts:
        problems.append(f"SIGNOFF_API_PUBLIC_URL {env['SIGNOFF_API_PUBLIC_URL']} is not https://<the Ingress host>")
    for role in ("notifier", "approval"):  # the notifications' links, the CDEvents' URLs
        (container,) = pod_spec(one(objects, "Deployment", f"signoff-{role}"))["containers"]
        page = container_env(objects, container)["SIGNOFF_APPROVAL_PAGE_URL"]
        if urlsplit(page).hostname not in hosts:
            problems.append(f"the {role}'s links ({page}) do not lead to the Ingress host")

    # The api itself answers an oversized body (413, problem+json) and a decision that waits for its outcome.
    max_body = ApiSettings.model_fields["api_max_body_bytes"].default
    if nginx_size(annotations.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")) <= max_body:
        problems.append("the proxy's body limit is not above the api's")
    wait_field = ApiSettings.model_fields["api_decision_wait_seconds"]
    longest_wait = next(m.le for m in wait_field.metadata if hasattr(m, "le"))
    if int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) <= longest_wait:
        problems.append("the proxy's read timeout is not above the longest decision wait")
    return problems


def test_the_ingress_serves_the_api_over_tls(rendered: dict[str, list[Manifest]]) -> None:
    assert ingress_problems(rendered["prod"]) == []


def _set_api_env(objects: list[Manifest], url: str) -> None:
    (var,) = [v for v in api_container(objects)[0]["env"] if v["name"] == "SIGNOFF_API_PUBLIC_URL"]
    var["value"] = url


def _set_page_url(objects: list[Manifest], role: str, url: str) -> None:
    (container,) = pod_spec(one(objects, "Deployment", f"signoff-{role}"))["containers"]
    (var,) = [v for v in container["env"] if v["name"] == "SIGNOFF_APPROVAL_PAGE_URL"]
    var["value"] = url


@pytest.mark.parametrize(
    ("what", "mutate", "problem"),
    [
        (
            "CDEvents linking elsewhere",
            lambda o: _set_page_url(o, "approval", "https://approvals.example.com/"),
            "the approval's links",
        ),
        (
            "metrics exposed",
            lambda o: by_kind(o, "Ingress")[API]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(
                port={"name": "http"}
            ),
            "is routed to",
        ),
        ("no TLS", lambda o: by_kind(o, "Ingress")[API]["spec"].pop("tls"), "hosts without TLS"),
        ("a plain-HTTP public URL", lambda o: _set_api_env(o, "http://signoff.example.com"), "SIGNOFF_API_PUBLIC_URL"),
        ("another host", lambda o: _set_api_env(o, "https://approvals.example.com"), "SIGNOFF_API_PUBLIC_URL"),
        (
            "the body limit of the proxy",
            lambda o: by_kind(o, "Ingress")[API]["metadata"]["annotations"].update(
                {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}
            ),
            "body limit",
        ),
    ],
)
def test_a_broken_ingress_is_caught(rendered: dict[str, list[Manifest]], what: str, mutate, problem: str) -> None:
    objects = copy.deepcopy(rendered["prod"])
    mutate(objects)
    problems = ingress_problems(objects)
    assert len(problems) == 1 and problem in problems[0], problems


# ---- autoscaling -----------------------------------------------------------------------------------------------


def test_the_api_scales_on_cpu(objects: list[Manifest]) -> None:
    """It reads gate events without a consumer group, so there is no lag to scale on: CPU against its request."""
    scaled = one(objects, "ScaledObject", API)["spec"]
    deployment = one(objects, "Deployment", API)
    container, _ = api_container(objects)
    assert (scaled["scaleTargetRef"]["kind"], scaled["scaleTargetRef"]["name"]) == ("Deployment", API)
    assert scaled["scaleTargetRef"]["envSourceContainerName"] == container["name"]
    assert scaled["minReplicaCount"] == deployment["spec"]["replicas"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("cpu", "Utilization")
    assert trigger["metadata"]["containerName"] == container["name"] and 0 < int(trigger["metadata"]["value"]) <= 100
    assert "authenticationRef" not in trigger
    assert container["resources"]["requests"]["cpu"]  # Utilization is relative to the request


# ---- the overlay patches docs/deploying.md shows --------------------------------------------------------------

DOC = REPO / "docs" / "deploying.md"
DOC_MARKER = "<!-- tests/deploy/test_api.py renders the prod overlay with this block's patches added. -->"


def documented_patches() -> list[list[Manifest]]:
    """The `patches:` of each ```yaml block that follows the marker in docs/deploying.md, in page order."""
    blocks = []
    for part in DOC.read_text().split(DOC_MARKER)[1:]:
        match = re.search(r"```yaml\n(.*?)```", part, re.S)
        assert match, "no ```yaml block after a marker"
        blocks.append(yaml.safe_load(textwrap.dedent(match.group(1)))["patches"])
    assert len(blocks) == 2, "the host and the OIDC examples"
    return blocks


def prod_with(tmp_path: Path, patches: list[Manifest]) -> list[Manifest]:
    deploy = edit_copy(tmp_path, "overlays/prod/kustomization.yaml", lambda docs: docs[0]["patches"].extend(patches))
    objects = render(deploy / "overlays" / "prod")
    assert validate_all(objects, kubernetes_versions()[-1]) == []
    assert scan(objects) == []
    return objects


def test_the_documented_host_change_moves_all_four_places(tmp_path: Path) -> None:
    objects = prod_with(tmp_path, documented_patches()[0])
    assert ingress_problems(objects) == []
    assert one(objects, "Ingress", API)["spec"]["rules"][0]["host"] == "signoff.corp.example"


def test_the_documented_oidc_settings_reach_the_api(tmp_path: Path) -> None:
    objects = prod_with(tmp_path, documented_patches()[1])
    _, env = api_container(objects)
    assert env["SIGNOFF_OIDC_ISSUER"] == "https://login.example.com/realms/corp"
    assert env["SIGNOFF_OIDC_AUDIENCE"] == "signoff"
    scratch = tmp_path / "secrets"
    scratch.mkdir()
    assert settings_refusals(objects, "api", scratch) == []
