"""Small builders for pipeline documents in tests (plain dicts, the shape YAML gives)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from signoff.catalog import Catalog
from signoff.executor.domain.pipeline import Pipeline, parse_pipeline
from tests.support.seeds import HARNESS_APPROVAL_STEP_YAML

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"

SEED_STEP_YAML = HARNESS_APPROVAL_STEP_YAML  # the seed's step, character for character


def seed_pipeline_yaml() -> str:
    """A minimal pipeline whose only step is the seed's YAML, pasted unchanged."""
    return (
        "pipeline:\n"
        "  name: Seed\n"
        "  identifier: seed\n"
        "  stages:\n"
        "    - stage:\n"
        "        name: Approve\n"
        "        identifier: approve\n"
        "        type: Approval\n"
        "        spec:\n"
        "          execution:\n"
        "            steps:\n" + textwrap.indent(SEED_STEP_YAML, " " * 14)
    )


def shell(identifier: str, script: str = "echo hi", *, outputs: tuple[str, ...] = (), **extra: Any) -> dict:
    spec: dict[str, Any] = {"shell": "Bash", "source": {"type": "Inline", "spec": {"script": script}}}
    if outputs:
        spec["outputVariables"] = [{"name": name, "type": "String", "value": name.upper()} for name in outputs]
    spec.update(extra.pop("spec", {}))
    return {"step": {"type": "ShellScript", "name": identifier, "identifier": identifier, "spec": spec, **extra}}


def wait(identifier: str, duration: str = "10m") -> dict:
    return {"step": {"type": "Wait", "name": identifier, "identifier": identifier, "spec": {"duration": duration}}}


def approval(identifier: str = "approve", message: str = "Please approve", **spec: Any) -> dict:
    body = {
        "approvalMessage": message,
        "includePipelineExecutionHistory": True,
        "approvers": {"userGroups": ["docs"], "minimumCount": 1, "disallowPipelineExecutor": False},
        "approverInputs": [{"name": "foo", "defaultValue": "bar"}],
    }
    body.update(spec)
    return {
        "step": {"type": "HarnessApproval", "name": identifier, "identifier": identifier, "timeout": "1d", "spec": body}
    }


def parallel(*items: dict) -> dict:
    return {"parallel": list(items)}


def group(identifier: str, *items: dict) -> dict:
    return {"stepGroup": {"name": identifier, "identifier": identifier, "steps": list(items)}}


def stage(identifier: str, *steps: dict, type: str = "Custom", **spec: Any) -> dict:
    return {
        "stage": {
            "name": identifier.replace("_", " ").title(),
            "identifier": identifier,
            "type": type,
            "spec": {**spec, "execution": {"steps": list(steps)}},
        }
    }


def deployment(
    identifier: str,
    *steps: dict,
    service: str = "checkout",
    env: str = "staging",
    infra: str = "staging_k8s",
    **spec: Any,
) -> dict:
    return stage(
        identifier,
        *steps,
        type="Deployment",
        service={"serviceRef": service},
        environment={"environmentRef": env, "infrastructureDefinitions": [{"identifier": infra}]},
        **spec,
    )


def pipeline(*stages: dict, variables: list[dict] | None = None, name: str = "Test pipeline") -> dict:
    body: dict[str, Any] = {"name": name, "identifier": "test_pipeline", "stages": list(stages)}
    if variables is not None:
        body["variables"] = variables
    return {"pipeline": body}


def as_yaml(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def load_pipeline(path: Path, *, catalog: Catalog | None = None) -> Pipeline:
    """A pipeline file of the examples, parsed as the executor's CLI and handlers parse what they read."""
    return parse_pipeline(path.read_text(), catalog=catalog, source=str(path))
