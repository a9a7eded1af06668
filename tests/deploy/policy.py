"""Policy checks over rendered manifests: the Kubernetes "restricted" pod security profile and the rest of what
DESIGN.md asks of deploy/ (pinned images, resources, probes, no secrets in manifests, network policies, PDBs).

Each rule has an id and a severity; `scan` returns every finding. tests/deploy/test_policy.py requires no finding
on any overlay and proves, rule by rule, that each one fires on a manifest that breaks it.

| rule | severity | what it requires |
|---|---|---|
| SO001 | high | pods run as non-root: runAsNonRoot true (pod or every container), no runAsUser 0 |
| SO002 | high | allowPrivilegeEscalation false on every container |
| SO003 | high | readOnlyRootFilesystem true on every container |
| SO004 | high | capabilities drop ALL, add none |
| SO005 | high | seccompProfile RuntimeDefault or Localhost (pod or every container), never Unconfined |
| SO006 | high | no privileged containers, host namespaces, hostPath volumes or hostPorts |
| SO007 | high | automountServiceAccountToken false on pods and ServiceAccounts |
| SO008 | high | images pinned: a version tag or a digest, never :latest or no tag |
| SO009 | high | no Secret objects, no secret-looking literal env values (secrets are referenced, never committed) |
| SO010 | high | every pod is selected by a NetworkPolicy that restricts both Ingress and Egress |
| SO011 | medium | resources: cpu and memory requests, a memory limit |
| SO012 | medium | long-running containers have liveness and readiness probes, on different endpoints |
| SO013 | medium | a read-only root filesystem comes with a writable emptyDir at /tmp |
| SO014 | medium | pods run under their own ServiceAccount, not `default` |
| SO015 | medium | every Deployment has a PodDisruptionBudget selecting its pods |
| SO016 | low | app.kubernetes.io/name, component and part-of labels on every object and pod template |
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tests.deploy.manifests import Manifest, containers, pod_spec, ref

HIGH, MEDIUM, LOW = "high", "medium", "low"
RULES: dict[str, str] = {
    "SO001": HIGH,
    "SO002": HIGH,
    "SO003": HIGH,
    "SO004": HIGH,
    "SO005": HIGH,
    "SO006": HIGH,
    "SO007": HIGH,
    "SO008": HIGH,
    "SO009": HIGH,
    "SO010": HIGH,
    "SO011": MEDIUM,
    "SO012": MEDIUM,
    "SO013": MEDIUM,
    "SO014": MEDIUM,
    "SO015": MEDIUM,
    "SO016": LOW,
}
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")
SECRET_NAME = re.compile(
    r"(^|_)(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|DATABASE_URL|DSN|CREDENTIALS?)$", re.I
)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
PINNED_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True)
class Finding:
    rule: str
    obj: str
    message: str

    @property
    def severity(self) -> str:
        return RULES[self.rule]

    def __str__(self) -> str:
        return f"{self.rule} ({self.severity}) {self.obj}: {self.message}"


def scan(objects: list[Manifest]) -> list[Finding]:
    findings: list[Finding] = []
    for obj in objects:
        findings += _object_rules(obj)
        spec = pod_spec(obj)
        if spec is not None:
            findings += _pod_rules(obj, spec)
    findings += _network_policies(objects)
    findings += _disruption_budgets(objects)
    return findings


def _object_rules(obj: Manifest) -> list[Finding]:
    out = []
    labels = obj.get("metadata", {}).get("labels") or {}
    missing = [label for label in REQUIRED_LABELS if label not in labels]
    if missing:
        out.append(Finding("SO016", ref(obj), f"labels missing: {', '.join(missing)}"))
    if obj.get("kind") == "Secret":
        out.append(Finding("SO009", ref(obj), "a Secret in the manifests: reference secrets, never commit them"))
    if obj.get("kind") == "ServiceAccount" and obj.get("automountServiceAccountToken") is not False:
        out.append(Finding("SO007", ref(obj), "ServiceAccount without automountServiceAccountToken: false"))
    return out


def _pod_rules(obj: Manifest, spec: Manifest) -> list[Finding]:
    name = ref(obj)
    out: list[Finding] = []

    def add(rule: str, message: str) -> None:
        out.append(Finding(rule, name, message))

    template = obj["spec"]["template"] if obj["kind"] != "CronJob" else obj["spec"]["jobTemplate"]["spec"]["template"]
    labels = template.get("metadata", {}).get("labels") or {}
    missing = [label for label in REQUIRED_LABELS if label not in labels]
    if missing:
        add("SO016", f"pod template labels missing: {', '.join(missing)}")

    pod_sc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        add("SO007", "pod without automountServiceAccountToken: false")
    if spec.get("serviceAccountName", "default") == "default":
        add("SO014", "runs under the default ServiceAccount")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            add("SO006", f"{field}: true")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            add("SO006", f"hostPath volume {volume['name']}")
    if pod_sc.get("runAsUser") == 0:
        add("SO001", "pod runAsUser 0")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        cname = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            add("SO001", f"container {cname}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            add("SO001", f"container {cname}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            add("SO002", f"container {cname}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            add("SO003", f"container {cname}: readOnlyRootFilesystem is not true")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            add("SO004", f"container {cname}: capabilities do not drop ALL")
        if caps.get("add"):
            add("SO004", f"container {cname}: capabilities add {caps['add']}")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            add("SO005", f"container {cname}: seccompProfile is {seccomp or 'unset'}")
        if sc.get("privileged"):
            add("SO006", f"container {cname}: privileged")
        if any("hostPort" in p for p in c.get("ports", [])):
            add("SO006", f"container {cname}: hostPort")

        image = c.get("image", "")
        if not _pinned(image):
            add("SO008", f"container {cname}: image {image!r} is not pinned to a version or digest")

        for var in c.get("env", []):
            value = var.get("value")
            if value is None:
                continue
            if SECRET_NAME.search(var["name"]) or URL_WITH_PASSWORD.search(value):
                add("SO009", f"container {cname}: {var['name']} has a literal value; reference a Secret")

        resources = c.get("resources") or {}
        wanted = [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
        absent = [f"{a}.{b}" for a, b in wanted if not (resources.get(a) or {}).get(b)]
        if absent:
            add("SO011", f"container {cname}: resources missing {', '.join(absent)}")

        if obj["kind"] in LONG_RUNNING and c in spec.get("containers", []):
            live, ready = c.get("livenessProbe"), c.get("readinessProbe")
            if not live or not ready:
                add("SO012", f"container {cname}: needs both livenessProbe and readinessProbe")
            elif _probe_target(live) == _probe_target(ready):
                add("SO012", f"container {cname}: liveness and readiness probe the same endpoint")

        if sc.get("readOnlyRootFilesystem") is True:
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                add("SO013", f"container {cname}: no emptyDir mounted at /tmp")
    return out


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (a colon only in a registry host:port)
        return False
    return tag != "latest" and bool(PINNED_TAG.match(tag)) and any(ch.isdigit() for ch in tag)


def _probe_target(probe: Manifest) -> object:
    if "httpGet" in probe:
        return ("http", probe["httpGet"].get("path"), probe["httpGet"].get("port"))
    return tuple(sorted((k, str(v)) for k, v in probe.items() if k in ("exec", "tcpSocket", "grpc")))


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    if not selector:
        return True  # an empty selector selects everything
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def pod_labels(obj: Manifest) -> dict[str, str]:
    template = obj["spec"]["template"] if obj["kind"] != "CronJob" else obj["spec"]["jobTemplate"]["spec"]["template"]
    return template.get("metadata", {}).get("labels") or {}


def _network_policies(objects: Iterable[Manifest]) -> list[Finding]:
    objects = list(objects)
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    out = []
    for obj in objects:
        if pod_spec(obj) is None:
            continue
        labels = pod_labels(obj)
        types: set[str] = set()
        for policy in policies:
            if selects(policy["spec"].get("podSelector") or {}, labels):
                types |= set(policy["spec"].get("policyTypes") or ["Ingress"])
        if not {"Ingress", "Egress"} <= types:
            out.append(Finding("SO010", ref(obj), f"NetworkPolicies restrict only {sorted(types) or 'nothing'}"))
    return out


def _disruption_budgets(objects: Iterable[Manifest]) -> list[Finding]:
    objects = list(objects)
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    return [
        Finding("SO015", ref(obj), "no PodDisruptionBudget selects its pods")
        for obj in objects
        if obj.get("kind") == "Deployment"
        and not any(selects(b["spec"].get("selector") or {}, pod_labels(obj)) for b in budgets)
    ]
