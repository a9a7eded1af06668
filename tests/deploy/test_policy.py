"""The policy scan (tests/deploy/policy.py) finds nothing in any overlay, and each of its rules fires on a manifest
that breaks it, so none of them is a check that cannot fail."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.deploy.manifests import Manifest, by_kind, edit_copy, render
from tests.deploy.policy import RULES, scan


def test_no_findings(objects: list[Manifest]) -> None:
    findings = scan(objects)
    assert not findings, "\n".join(map(str, findings))


def _container(objects: list[Manifest], name: str = "signoff-approval") -> Manifest:
    return by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]


def _pod(objects: list[Manifest], kind: str = "Deployment", name: str = "signoff-approval") -> Manifest:
    return by_kind(objects, kind)[name]["spec"]["template"]["spec"]


def _template_labels(objects: list[Manifest]) -> dict[str, str]:
    return by_kind(objects, "Deployment")["signoff-executor"]["spec"]["template"]["metadata"]["labels"]


def _drop(objects: list[Manifest], kind: str, name: str) -> None:
    objects.remove(by_kind(objects, kind)[name])


LABELS = {"app.kubernetes.io/name": "s", "app.kubernetes.io/component": "c", "app.kubernetes.io/part-of": "signoff"}

# rule -> (what breaks it, a mutation of the rendered prod overlay)
BREAKAGES: dict[str, list[tuple[str, Callable[[list[Manifest]], None]]]] = {
    "SO001": [
        ("runAsNonRoot false", lambda o: _container(o)["securityContext"].update(runAsNonRoot=False)),
        ("runAsUser 0 on the pod", lambda o: _pod(o)["securityContext"].update(runAsUser=0)),
    ],
    "SO002": [("privilege escalation", lambda o: _container(o)["securityContext"].pop("allowPrivilegeEscalation"))],
    "SO003": [("writable root", lambda o: _container(o)["securityContext"].update(readOnlyRootFilesystem=False))],
    "SO004": [
        ("no drop ALL", lambda o: _container(o)["securityContext"]["capabilities"].update(drop=["NET_RAW"])),
        ("added capability", lambda o: _container(o)["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
    ],
    "SO005": [
        (
            "unconfined seccomp",
            lambda o: _container(o)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        ),
        (
            "no seccomp anywhere",
            lambda o: (_container(o)["securityContext"].pop("seccompProfile"), _pod(o)["securityContext"].clear()),
        ),
    ],
    "SO006": [
        ("privileged", lambda o: _container(o)["securityContext"].update(privileged=True)),
        ("host network", lambda o: _pod(o).update(hostNetwork=True)),
        ("hostPath", lambda o: _pod(o)["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
        ("hostPort", lambda o: _container(o)["ports"][0].update(hostPort=8080)),
    ],
    "SO007": [
        ("token on the pod", lambda o: _pod(o).pop("automountServiceAccountToken")),
        (
            "token on the account",
            lambda o: by_kind(o, "ServiceAccount")["signoff-notifier"].update(automountServiceAccountToken=True),
        ),
    ],
    "SO008": [
        ("latest", lambda o: _container(o).update(image="registry.example.com/platform/signoff:latest")),
        ("no tag", lambda o: _container(o).update(image="registry.example.com:5000/platform/signoff")),
        ("no version in the tag", lambda o: _container(o).update(image="registry.example.com/signoff:stable")),
    ],
    "SO009": [
        (
            "a Secret object",
            lambda o: o.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": LABELS}}),
        ),
        (
            "a password in env",
            lambda o: _container(o)["env"].append({"name": "SIGNOFF_KAFKA_SASL_PASSWORD", "value": "hunter2"}),
        ),
        (
            "a DSN with a password in env",
            lambda o: _container(o)["env"].append({"name": "SIGNOFF_X", "value": "postgresql://u:pw@db/x"}),
        ),
    ],
    "SO010": [
        ("no NetworkPolicy", lambda o: _drop(o, "NetworkPolicy", "signoff-executor")),
        (
            "ingress only",
            lambda o: by_kind(o, "NetworkPolicy")["signoff-migrate"]["spec"].update(policyTypes=["Ingress"]),
        ),
    ],
    "SO011": [
        ("no memory limit", lambda o: _container(o)["resources"].pop("limits")),
        ("no cpu request", lambda o: _container(o)["resources"]["requests"].pop("cpu")),
    ],
    "SO012": [
        ("no readiness probe", lambda o: _container(o).pop("readinessProbe")),
        (
            "readiness probes liveness's endpoint",
            lambda o: _container(o)["readinessProbe"]["httpGet"].update(path="/healthz"),
        ),
    ],
    "SO013": [("no /tmp", lambda o: _container(o)["volumeMounts"].pop())],
    "SO014": [("default account", lambda o: _pod(o, "Job", "signoff-migrate").pop("serviceAccountName"))],
    "SO015": [("no PodDisruptionBudget", lambda o: _drop(o, "PodDisruptionBudget", "signoff-notifier"))],
    "SO016": [
        (
            "object without part-of",
            lambda o: by_kind(o, "KafkaTopic")["signoff-deadletter-v1"]["metadata"]["labels"].clear(),
        ),
        ("pod template without component", lambda o: _template_labels(o).pop("app.kubernetes.io/component")),
    ],
}


def test_every_rule_has_a_breakage() -> None:
    assert set(BREAKAGES) == set(RULES)


@pytest.mark.parametrize(
    ("rule", "mutate"),
    [pytest.param(rule, mutate, id=f"{rule}-{what}") for rule, cases in BREAKAGES.items() for what, mutate in cases],
)
def test_rule_fires(rendered: dict[str, list[Manifest]], rule: str, mutate: Callable[[list[Manifest]], None]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    mutate(objects)
    fired = {f.rule for f in scan(objects)}
    assert fired == {rule}, f"expected exactly {rule}, got {sorted(fired)}"


def test_a_root_container_in_the_sources_fails_the_scan(tmp_path) -> None:
    """Edit the base in a copy of deploy/, render the overlay with kustomize, scan: the finding names the pod."""

    def root(docs: list[Manifest]) -> None:
        spec = docs[0]["spec"]["template"]["spec"]
        spec["securityContext"]["runAsNonRoot"] = False
        spec["containers"][0]["securityContext"]["runAsNonRoot"] = False

    deploy = edit_copy(tmp_path, "base/approval/deployment.yaml", root)
    findings = [str(f) for f in scan(render(deploy / "overlays" / "prod"))]
    assert findings == ["SO001 (high) Deployment/signoff-approval: container approval: runAsNonRoot is not true"]
