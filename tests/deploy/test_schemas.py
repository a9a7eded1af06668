"""Every rendered object is valid against its schema, offline: the strict Kubernetes schemas of the oldest supported
and the newest Kubernetes for the built-in kinds, deploy/schemas/ for Strimzi and KEDA. Broken copies of deploy/
show the validation reports what it should."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, Manifest, edit_copy, kubernetes_versions, render, validate, validate_all


@pytest.mark.parametrize("kubernetes_version", kubernetes_versions())
def test_every_object_is_valid(objects: list[Manifest], kubernetes_version: str) -> None:
    problems = validate_all(objects, kubernetes_version)
    assert not problems, "\n".join(map(str, problems))


def test_the_base_alone_is_valid() -> None:
    for version in kubernetes_versions():
        problems = validate_all(render(DEPLOY / "base"), version)
        assert not problems, "\n".join(map(str, problems))


def problems_of(deploy: Path, overlay: str = "prod") -> list[str]:
    objects = render(deploy / "overlays" / overlay)
    return [str(p) for version in kubernetes_versions() for p in validate_all(objects, version)]


def test_a_deployment_without_selector_fails(tmp_path: Path) -> None:
    def drop_selector(docs: list[Manifest]) -> None:
        del docs[0]["spec"]["selector"]

    problems = problems_of(edit_copy(tmp_path, "base/approval/deployment.yaml", drop_selector))
    assert any(p.startswith("Deployment/signoff-approval: spec: 'selector' is a required property") for p in problems)


def test_a_misspelt_field_fails(tmp_path: Path) -> None:
    def misspell(docs: list[Manifest]) -> None:
        container = docs[0]["spec"]["template"]["spec"]["containers"][0]
        container["readinessProbes"] = container.pop("readinessProbe")

    problems = problems_of(edit_copy(tmp_path, "base/notifier/deployment.yaml", misspell))
    assert any("Deployment/signoff-notifier" in p and "'readinessProbes' was unexpected" in p for p in problems)


def test_a_wrong_type_fails(tmp_path: Path) -> None:
    def stringly(docs: list[Manifest]) -> None:
        docs[0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"

    problems = problems_of(edit_copy(tmp_path, "base/executor/deployment.yaml", stringly), overlay="dev")
    assert any("Deployment/signoff-executor" in p and "containerPort" in p for p in problems)


def test_broken_custom_resources_fail(tmp_path: Path) -> None:
    def old_acl_syntax(docs: list[Manifest]) -> None:
        acl = docs[0]["spec"]["authorization"]["acls"][0]
        acl["operation"] = acl.pop("operations")[0]  # v1beta2's single operation, gone in v1

    deploy = edit_copy(tmp_path, "base/kafka/kafkausers.yaml", old_acl_syntax)
    problems = problems_of(deploy)
    assert any(
        p.startswith("KafkaUser/signoff-approval: spec.authorization.acls.0:") and "operations" in p for p in problems
    )

    def numeric_threshold(docs: list[Manifest]) -> None:
        docs[0]["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 200  # KEDA wants strings

    shutil.rmtree(deploy)
    problems = problems_of(edit_copy(tmp_path, "components/keda/scaledobjects.yaml", numeric_threshold))
    assert any(
        p.startswith("ScaledObject/signoff-approval: spec.triggers.0.metadata.lagThreshold: 200 is not of type")
        for p in problems
    )


def test_a_topic_with_zero_partitions_fails() -> None:
    topic = {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaTopic",
        "metadata": {"name": "t"},
        "spec": {"partitions": 0, "replicas": 3},
    }
    (problem,) = validate(topic, kubernetes_versions()[-1])
    assert problem.path == "spec.partitions" and "minimum" in problem.message


def test_an_object_without_schema_is_a_problem() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {}}
    (problem,) = validate(unknown, kubernetes_versions()[-1])
    assert "no schema for Gadget example.com/v1" in problem.message


def test_a_removed_api_version_fails_on_new_kubernetes() -> None:
    # policy/v1beta1 PodDisruptionBudget was removed in Kubernetes 1.25: no schema, so a problem, not a pass.
    budget = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "b"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}},
    }
    assert validate(budget, kubernetes_versions()[-1])
