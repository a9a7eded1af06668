"""Keys outside a step's `spec`: one Harness's pipeline schema does not define is refused (by its path, with the
closest known key), one Harness defines but signoff does not use is accepted and ignored."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from signoff.catalog.yamldoc import Issue
from signoff.executor.domain.definitions import Definitions
from signoff.executor.domain.pipeline import (
    HARNESS_PIPELINE_KEYS,
    HARNESS_STAGE_KEYS,
    HARNESS_STEP_GROUP_KEYS,
    HARNESS_STEP_KEYS,
    HARNESS_VARIABLE_KEYS,
    PipelineError,
    parse_pipeline,
    validate_pipeline,
)
from tests.unit.executor.builders import (
    SEED_STEP_YAML,
    approval,
    as_yaml,
    group,
    parallel,
    pipeline,
    seed_pipeline_yaml,
    shell,
    stage,
    wait,
)

SEEDS = Path("/work/shared/seeds")

STAGE = "pipeline.stages[0].stage"
STEP = f"{STAGE}.spec.execution.steps[0].step"
GROUP = f"{STAGE}.spec.execution.steps[0].stepGroup"

# What Harness's v0 schema defines at each level and signoff does not act on (written out here, not taken from the
# module, so that dropping one from the parser's lists fails a test), each with a value Harness would take.
PIPELINE_IGNORED: dict[str, Any] = {
    "allowStageExecutions": True,
    "delegateSelectors": ["primary"],
    "fixedInputsOnRerun": False,
    "flowControl": {"barriers": [{"name": "sync", "identifier": "sync"}]},
    "notificationRules": [],
    "orgIdentifier": "default",
    "projectIdentifier": "checkout",
    "properties": {"ci": {"codebase": {"connectorRef": "github", "build": "<+input>"}}},
    "template": {"templateRef": "release", "versionLabel": "v1"},
    "timeout": "1d",
}
STAGE_IGNORED: dict[str, Any] = {
    "delegateSelectors": ["primary"],
    "failureStrategies": [{"onFailure": {"errors": ["AllErrors"], "action": {"type": "StageRollback"}}}],
    "pipelineVariables": [],
    "runMode": {"type": "Always"},
    "skipCondition": "false",
    "skipInstances": False,
    "strategy": {},
    "tags": {"team": "payments"},
    "template": {"templateRef": "deploy", "versionLabel": "v1"},
    "timeout": "2h",
    "when": {"pipelineStatus": "Success"},
}
STEP_GROUP_IGNORED: dict[str, Any] = {
    "delegateSelectors": ["primary"],
    "description": "checks",
    "failureStrategies": [],
    "platform": {"os": "Linux", "arch": "Amd64"},
    "sharedPaths": ["/tmp/shared"],
    "skipCondition": "false",
    "stepGroupInfra": {"type": "KubernetesDirect", "spec": {"connectorRef": "k8s", "namespace": "ci"}},
    "strategy": {},
    "template": {"templateRef": "checks", "versionLabel": "v1"},
    "variables": [],
    "when": {"stageStatus": "Success"},
}
STEP_IGNORED: dict[str, Any] = {
    "delegateSelectors": ["primary"],
    "enforce": {"policySets": ["scripts"]},
    "failureStrategies": [{"onFailure": {"errors": ["AllErrors"], "action": {"type": "MarkAsFailure"}}}],
    "identities": {"type": "Jenkins"},
    "skipCondition": "false",
    "strategy": {},
    "template": {"templateRef": "script", "versionLabel": "v1"},
    "when": {"stageStatus": "Success"},
}
VARIABLE_IGNORED: dict[str, Any] = {
    "default": "staging",
    "metadata": "",
}

# Keys the parser reads at each level, or that the builders already write.
PIPELINE_USED = {"identifier", "name", "description", "variables", "tags", "stages"}
STAGE_USED = {"identifier", "name", "type", "description", "variables", "spec"}
STEP_GROUP_USED = {"identifier", "name", "steps"}
STEP_USED = {"identifier", "name", "type", "timeout", "description", "spec"}
VARIABLE_USED = {"name", "type", "value", "description", "required"}


def one_step_pipeline(step: dict) -> dict:
    return pipeline(stage("deploy", step))


def refused(document: dict) -> list[Issue]:
    return [issue for issue in validate_pipeline(document) if issue.message.startswith("unknown key")]


# -- refused -----------------------------------------------------------------------------------------------------


def test_a_typo_on_a_pipeline_variable_is_refused_with_a_suggestion() -> None:
    document = one_step_pipeline(shell("build"))
    document["pipeline"]["variables"] = [{"name": "env", "type": "String", "value": "dev", "requird": True}]
    assert validate_pipeline(document) == [
        Issue("pipeline.variables[0].requird", "unknown key 'requird' (did you mean 'required'?)")
    ]
    with pytest.raises(Exception, match=r"pipeline\.variables\[0\]\.requird: unknown key 'requird'"):
        parse_pipeline(document)


def test_a_typo_on_the_pipeline_is_refused() -> None:
    document = one_step_pipeline(shell("build"))
    document["pipeline"]["descripton"] = "release"
    assert validate_pipeline(document) == [
        Issue("pipeline.descripton", "unknown key 'descripton' (did you mean 'description'?)")
    ]


def test_a_typo_on_a_stage_and_its_variable_is_refused() -> None:
    document = one_step_pipeline(shell("build"))
    body = document["pipeline"]["stages"][0]["stage"]
    body["descripton"] = "deploys"
    body["variables"] = [{"name": "region", "type": "String", "value": "eu", "requird": True}]
    assert validate_pipeline(document) == [
        Issue(f"{STAGE}.descripton", "unknown key 'descripton' (did you mean 'description'?)"),
        Issue(f"{STAGE}.variables[0].requird", "unknown key 'requird' (did you mean 'required'?)"),
    ]


def test_a_typo_on_a_step_group_is_refused() -> None:
    document = one_step_pipeline(group("checks", shell("lint")))
    document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["stepGroup"]["failureStrategy"] = []
    assert validate_pipeline(document) == [
        Issue(f"{GROUP}.failureStrategy", "unknown key 'failureStrategy' (did you mean 'failureStrategies'?)")
    ]


def test_a_step_group_variable_is_checked_too() -> None:
    document = one_step_pipeline(group("checks", shell("lint")))
    node = document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["stepGroup"]
    node["variables"] = [{"name": "x", "type": "String", "value": "1", "defaultValue": "1"}]
    assert refused(document) == [
        Issue(f"{GROUP}.variables[0].defaultValue", "unknown key 'defaultValue' (did you mean 'default'?)")
    ]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("timout", "unknown key 'timout' (did you mean 'timeout'?)"),
        ("retry", "unknown key 'retry'"),  # nothing close: no suggestion
    ],
)
def test_a_typo_on_a_step_is_refused(key: str, message: str) -> None:
    step = shell("build")
    step["step"][key] = "10m" if key == "timout" else {"count": 3}
    assert validate_pipeline(one_step_pipeline(step)) == [Issue(f"{STEP}.{key}", message)]


def test_steps_in_groups_and_parallel_blocks_are_checked() -> None:
    lane = wait("pause")
    lane["step"]["timout"] = "1m"
    inner = shell("lint")
    inner["step"]["descriptin"] = "lint"
    document = pipeline(stage("deploy", parallel(lane, shell("build")), group("checks", inner)))
    steps = f"{STAGE}.spec.execution.steps"
    assert refused(document) == [
        Issue(f"{steps}[0].parallel[0].step.timout", "unknown key 'timout' (did you mean 'timeout'?)"),
        Issue(
            f"{steps}[1].stepGroup.steps[0].step.descriptin",
            "unknown key 'descriptin' (did you mean 'description'?)",
        ),
    ]


def test_every_unknown_key_is_reported() -> None:
    step = approval()
    step["step"]["timout"] = "1h"
    step["step"]["retry"] = 2
    document = pipeline(
        stage("deploy", step), variables=[{"name": "env", "type": "String", "value": "dev", "requird": True}]
    )
    document["pipeline"]["projectIdentifer"] = "checkout"
    document["pipeline"]["stages"][0]["stage"]["descripton"] = "x"
    issues = validate_pipeline(document)
    assert [issue.path for issue in issues] == [
        "pipeline.projectIdentifer",
        "pipeline.variables[0].requird",
        f"{STAGE}.descripton",
        f"{STEP}.timout",
        f"{STEP}.retry",
    ]
    assert issues[0].message == "unknown key 'projectIdentifer' (did you mean 'projectIdentifier'?)"


def test_an_unknown_key_is_reported_beside_other_problems() -> None:
    step = shell("build")
    step["step"]["timeout"] = "soon"
    step["step"]["timout"] = "10m"
    paths = [issue.path for issue in validate_pipeline(one_step_pipeline(step))]
    assert f"{STEP}.timeout" in paths
    assert f"{STEP}.timout" in paths


# -- accepted ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), PIPELINE_IGNORED.items(), ids=list(PIPELINE_IGNORED))
def test_a_harness_pipeline_key_is_accepted(key: str, value: Any) -> None:
    document = one_step_pipeline(shell("build"))
    document["pipeline"][key] = value
    assert validate_pipeline(document) == []


@pytest.mark.parametrize(("key", "value"), STAGE_IGNORED.items(), ids=list(STAGE_IGNORED))
def test_a_harness_stage_key_is_accepted(key: str, value: Any) -> None:
    document = one_step_pipeline(shell("build"))
    document["pipeline"]["stages"][0]["stage"][key] = value
    assert validate_pipeline(document) == []


@pytest.mark.parametrize(("key", "value"), STEP_GROUP_IGNORED.items(), ids=list(STEP_GROUP_IGNORED))
def test_a_harness_step_group_key_is_accepted(key: str, value: Any) -> None:
    step_group = group("checks", shell("lint"))
    step_group["stepGroup"][key] = value
    assert validate_pipeline(one_step_pipeline(step_group)) == []


@pytest.mark.parametrize(("key", "value"), STEP_IGNORED.items(), ids=list(STEP_IGNORED))
@pytest.mark.parametrize("make", [shell, wait, approval], ids=["ShellScript", "Wait", "HarnessApproval"])
def test_a_harness_step_key_is_accepted(make: Any, key: str, value: Any) -> None:
    step = make("check")
    step["step"][key] = value
    assert validate_pipeline(one_step_pipeline(step)) == []


@pytest.mark.parametrize(("key", "value"), VARIABLE_IGNORED.items(), ids=list(VARIABLE_IGNORED))
@pytest.mark.parametrize("level", ["pipeline", "stage"])
def test_a_harness_variable_key_is_accepted(level: str, key: str, value: Any) -> None:
    variable = {"name": "env", "type": "String", "value": "dev", "description": "target", "required": True, key: value}
    document = one_step_pipeline(shell("build"))
    node = document["pipeline"] if level == "pipeline" else document["pipeline"]["stages"][0]["stage"]
    node["variables"] = [variable]
    assert validate_pipeline(document) == []


@pytest.mark.parametrize(
    ("keys", "ignored", "used"),
    [
        (HARNESS_PIPELINE_KEYS, PIPELINE_IGNORED, PIPELINE_USED),
        (HARNESS_STAGE_KEYS, STAGE_IGNORED, STAGE_USED),
        (HARNESS_STEP_GROUP_KEYS, STEP_GROUP_IGNORED, STEP_GROUP_USED),
        (HARNESS_STEP_KEYS, STEP_IGNORED, STEP_USED),
        (HARNESS_VARIABLE_KEYS, VARIABLE_IGNORED, VARIABLE_USED),
    ],
    ids=["pipeline", "stage", "stepGroup", "step", "variable"],
)
def test_the_lists_are_exactly_what_these_tests_cover(
    keys: frozenset[str], ignored: dict[str, Any], used: set[str]
) -> None:
    assert set(keys) == set(ignored) | used


def test_a_stage_spec_stays_lenient() -> None:
    document = pipeline(stage("deploy", shell("build"), rollbackSteps=[], serviceInputs={"x": 1}, madeUp=True))
    assert validate_pipeline(document) == []


def test_a_step_spec_stays_strict() -> None:
    document = one_step_pipeline(shell("build", spec={"scrpt": "x"}))
    assert [issue.path for issue in validate_pipeline(document)] == [f"{STEP}.spec.scrpt"]


# -- the seeds ---------------------------------------------------------------------------------------------------


def test_the_seed_step_still_parses() -> None:
    parsed = parse_pipeline(seed_pipeline_yaml())
    assert parsed.stages()[0].steps[0].identifier == "Harness_Approval_Step"  # type: ignore[union-attr]


def test_the_seed_documents_yaml_still_parses() -> None:
    if not SEEDS.is_dir():
        pytest.skip("the seed documents are not on this machine")
    blocks = [
        block
        for path in sorted(SEEDS.glob("*.md"))
        for block in re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S)
    ]
    assert blocks, "no YAML in the seed documents"
    for block in blocks:
        text = "\n".join(line[3:] if line.startswith("   ") else line for line in block.splitlines()) + "\n"
        steps = yaml.safe_load(text)
        assert steps == yaml.safe_load(SEED_STEP_YAML)
        document = one_step_pipeline(shell("unused"))
        document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"] = copy.deepcopy(steps)
        assert validate_pipeline(as_yaml(document)) == []


@pytest.mark.parametrize("level", ["stage", "step"])
def test_a_skip_condition_other_than_false_is_refused_not_ignored(level: str) -> None:
    document = one_step_pipeline(shell("build"))
    node = (
        document["pipeline"]["stages"][0]["stage"]
        if level == "stage"
        else document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["step"]
    )
    node["skipCondition"] = "<+pipeline.variables.env> == 'dev'"
    path = STAGE if level == "stage" else STEP
    assert validate_pipeline(document) == [
        Issue(f"{path}.skipCondition", "skip conditions are not supported (only false)")
    ]


def test_a_stored_execution_with_a_key_refused_since_it_started_still_loads() -> None:
    """An execution accepted before unknown keys were refused is restored, not failed on its next load."""
    document = one_step_pipeline(shell("build"))
    document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["step"]["timout"] = "5m"
    with pytest.raises(PipelineError, match="unknown key 'timout'"):
        parse_pipeline(document)
    restored, _plan = Definitions().get(document)
    assert restored.identifier == "test_pipeline"
