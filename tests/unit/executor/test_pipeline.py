"""Pipeline parsing and validation: Harness's shape accepted, every problem reported by its path."""

from __future__ import annotations

import textwrap

import pytest

from signoff.catalog import Catalog
from signoff.catalog.yamldoc import Issue
from signoff.executor.domain.pipeline import (
    HarnessApprovalSpec,
    ParallelStages,
    PipelineError,
    ShellScriptSpec,
    Step,
    iter_steps,
    parse_pipeline,
    validate_pipeline,
)
from tests.unit.executor.builders import (
    EXAMPLES,
    SEED_STEP_YAML,
    approval,
    deployment,
    group,
    load_pipeline,
    parallel,
    pipeline,
    seed_pipeline_yaml,
    shell,
    stage,
    wait,
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLES / "catalog.yaml")


def issues(document: dict | str, catalog: Catalog | None = None) -> list[str]:
    return [str(issue) for issue in validate_pipeline(document, catalog=catalog)]


def test_the_seed_harness_approval_step_parses_unchanged() -> None:
    parsed = parse_pipeline(seed_pipeline_yaml())
    [(_, step)] = list(iter_steps(parsed.stage("approve").steps))
    assert isinstance(step, Step)
    assert (step.type, step.name, step.identifier, step.timeout) == (
        "HarnessApproval",
        "Harness Approval Step",
        "Harness_Approval_Step",
        "1d",
    )
    spec = step.spec
    assert isinstance(spec, HarnessApprovalSpec)
    assert spec.approval_message == "Test"
    assert spec.include_pipeline_execution_history is True
    assert spec.approvers.user_groups == ("docs",)
    assert spec.approvers.minimum_count == 1
    assert spec.approvers.disallow_pipeline_executor is False
    assert [(i.name, i.default_value) for i in spec.approver_inputs] == [("foo", "bar")]
    assert spec.timeout_action == "Expire" and spec.auto_reject_previous is False


def test_the_example_pipeline_holds_the_seed_step_verbatim() -> None:
    text = (EXAMPLES / "pipelines" / "blue-green.yaml").read_text()
    assert textwrap.indent(SEED_STEP_YAML, " " * 14) in text


@pytest.mark.parametrize("name", ["blue-green.yaml", "blue-green-rich-approval.yaml"])
def test_example_pipelines_validate_against_the_example_catalog(name: str, catalog: Catalog) -> None:
    parsed = load_pipeline(EXAMPLES / "pipelines" / name, catalog=catalog)
    assert [s.identifier for s in parsed.stages()] == ["staging_blue_green", "production_rollout"]


def test_harness_v2_deployment_spellings_are_normalized(catalog: Catalog) -> None:
    rollout = load_pipeline(EXAMPLES / "pipelines" / "blue-green.yaml", catalog=catalog).stage("production_rollout")
    md = rollout.deployment
    assert md is not None
    assert md.deployment_type == "Kubernetes"
    assert md.service_refs == ("checkout", "payments_worker") and md.services_parallel
    assert [(e.environment_ref, e.infrastructure_refs) for e in md.environments] == [
        ("prod_eu", ("eks_eu",)),
        ("prod_us", ("eks_us",)),
    ]
    rich = load_pipeline(EXAMPLES / "pipelines" / "blue-green-rich-approval.yaml", catalog=catalog)
    group_md = rich.stage("production_rollout").deployment
    assert group_md is not None and group_md.environment_group is not None
    assert group_md.environment_group.env_group_ref == "production"
    assert [e.gitops_cluster_refs for e in group_md.all_environments] == [("argo_prod_eu",), ("argo_prod_us",)]
    assert group_md.gitops_enabled


def test_approval_in_parallel_is_refused_with_its_path() -> None:
    document = pipeline(
        stage("build", shell("compile")),
        stage("release", parallel(shell("notify"), approval("approve"))),
    )
    assert issues(document) == [
        "pipeline.stages[1].stage.spec.execution.steps[0].parallel[1].step: approval steps cannot run in parallel"
    ]


def test_approval_in_a_step_group_inside_parallel_is_refused_too() -> None:
    document = pipeline(stage("release", parallel(shell("a"), group("checks", shell("b"), approval("approve")))))
    assert issues(document) == [
        "pipeline.stages[0].stage.spec.execution.steps[0].parallel[1].stepGroup.steps[1].step: "
        "approval steps cannot run in parallel"
    ]


def test_unknown_step_type_is_refused_with_its_path() -> None:
    document = pipeline(
        stage(
            "deploy",
            shell("ok"),
            {"step": {"type": "K8sRollingDeploy", "name": "Roll", "identifier": "roll", "spec": {}}},
        )
    )
    assert issues(document) == [
        "pipeline.stages[0].stage.spec.execution.steps[1].step.type: unknown step type 'K8sRollingDeploy' "
        "(supported: HarnessApproval, ShellScript, Wait)"
    ]


def test_bad_durations_are_refused_and_expressions_allowed() -> None:
    document = pipeline(
        stage(
            "s",
            shell("a", timeout="10 minutes"),
            wait("b", "0s"),
            wait("c", "<+pipeline.variables.bake>"),
            shell("d", timeout="PT5M"),
        )
    )
    assert issues(document) == [
        "pipeline.stages[0].stage.spec.execution.steps[0].step.timeout: invalid duration '10 minutes'; expected "
        "Harness syntax like '1d', '2h30m', '45m', '10s', '1w' (units w d h m s ms, largest first) or ISO 8601 like "
        "'PT1H30M'",
        "pipeline.stages[0].stage.spec.execution.steps[1].step.spec.duration: duration '0s' must be longer than zero",
    ]


def test_unknown_catalog_refs_are_refused_but_expressions_stay_unresolved(catalog: Catalog) -> None:
    document = pipeline(
        deployment("a", shell("x"), service="billing", env="prod_eu", infra="staging_k8s"),
        deployment("b", shell("y"), service="<+pipeline.variables.svc>", env="<+pipeline.variables.env>", infra="k"),
        stage(
            "c",
            shell("z"),
            type="Deployment",
            service={"serviceRef": "checkout"},
            environmentGroup={
                "envGroupRef": "production",
                "environments": [{"environmentRef": "staging", "gitOpsClusters": [{"identifier": "argo_nowhere"}]}],
            },
        ),
    )
    assert issues(document, catalog) == [
        "pipeline.stages[0].stage.spec.service.serviceRef: unknown service 'billing' in " + catalog.source,
        "pipeline.stages[0].stage.spec.environment.infrastructureDefinitions[0].identifier: unknown infrastructure "
        "'staging_k8s' in environment 'prod_eu' in " + catalog.source,
        "pipeline.stages[2].stage.spec.environmentGroup.environments[0].gitOpsClusters[0].identifier: unknown GitOps "
        "cluster 'argo_nowhere' in " + catalog.source,
        "pipeline.stages[2].stage.spec.environmentGroup.environments[0].environmentRef: environment 'staging' is not "
        "in environment group 'production'",
    ]
    assert issues(document) == []  # without a catalog, refs are not checked


def test_duplicate_identifiers_are_refused() -> None:
    document = pipeline(
        stage("s", shell("a"), group("g", shell("a"))),
        stage("s", shell("b")),
        variables=[{"name": "v", "type": "String", "value": "1"}, {"name": "v", "type": "String", "value": "2"}],
    )
    assert issues(document) == [
        "pipeline.variables[1].name: duplicate variable 'v'",
        "pipeline.stages[0].stage.spec.execution.steps[1].stepGroup.steps[0].step.identifier: duplicate step "
        "identifier 'a' in this stage (first at pipeline.stages[0].stage.spec.execution.steps[0].step)",
        "pipeline.stages[1].stage.identifier: duplicate stage identifier 's' (first at pipeline.stages[0].stage)",
    ]


def test_missing_fields_and_typos_are_all_reported_at_once() -> None:
    document = pipeline(
        stage(
            "s",
            {"step": {"type": "ShellScript", "name": "a", "identifier": "a", "spec": {"shell": "Bash"}}},
            {"step": {"type": "ShellScript", "identifier": "b", "spec": {"shell": "PowerShell", "source": {}}}},
            {"step": {"type": "HarnessApproval", "name": "c", "identifier": "c", "spec": {"approvalMesage": "x"}}},
            {"step": {"type": "HarnessApproval", "name": "d", "identifier": "d", "spec": {"approvers": {}}}},
        )
    )
    steps = "pipeline.stages[0].stage.spec.execution.steps"
    assert issues(document) == [
        f"{steps}[0].step.spec.source: is required",
        f"{steps}[1].step.name: is required",
        f"{steps}[2].step.spec.approvers: is required",
        f"{steps}[2].step.spec.approvalMesage: unknown field (check the spelling)",
        f"{steps}[3].step.spec.approvers: name at least one user group or user who may approve",
    ]


def test_features_that_would_change_what_runs_are_refused_not_ignored() -> None:
    document = pipeline(
        stage(
            "s",
            shell("a", when={"stageStatus": "Success", "condition": "<+x> == 1"}),
            shell("b", strategy={"matrix": {}}),
        ),
        stage("t", shell("c", spec={"environmentVariables": [{"name": "TOKEN", "type": "Secret", "value": "x"}]})),
        stage("u", approval("d", autoApproval={"action": "APPROVE"})),
        {
            "stage": {
                "name": "v1",
                "identifier": "v1",
                "type": "Deployment",
                "spec": {"serviceConfig": {"serviceRef": "x"}, "execution": {"steps": [shell("e")]}},
            }
        },
    )
    found = issues(document)
    assert (
        "pipeline.stages[0].stage.spec.execution.steps[0].step.when: conditional execution is not supported "
        "(only the default status Success)" in found
    )
    assert any("steps[1].step.strategy: looping strategies" in p for p in found)
    assert any(
        "steps[0].step.spec.environmentVariables[0].type: Secret variables are not supported" in p for p in found
    )
    assert any(
        "steps[0].step.spec.autoApproval: autoApproval is not supported; use timeoutAction: Approve" in p for p in found
    )
    assert any(p.startswith("pipeline.stages[3].stage.spec.serviceConfig: Harness v1 'serviceConfig'") for p in found)


def test_harness_export_noise_is_accepted() -> None:
    document = pipeline(
        stage(
            "s",
            shell("a", failureStrategies=[], when={"stageStatus": "Success"}),
            rollbackSteps=[],
        )
    )
    document["pipeline"].update(projectIdentifier="p", orgIdentifier="o", tags={"team": "x"})
    document["pipeline"]["stages"][0]["stage"].update(when={"pipelineStatus": "Success"}, failureStrategies=[])
    assert issues(document) == []


def test_approval_extensions_parse() -> None:
    document = pipeline(
        stage(
            "s",
            approval(
                "a",
                approvers={
                    "userGroups": ["qa", "sre"],
                    "minimumCount": 1,
                    "rules": [{"userGroups": ["qa"], "minimumCount": 1}, {"userGroups": ["sre"], "minimumCount": 2}],
                },
                approverInputs=[
                    {"name": "speed", "defaultValue": "normal", "allowedValues": ["slow", "normal"], "required": True}
                ],
                isAutoRejectEnabled=True,
                timeoutAction="Reject",
            ),
        )
    )
    spec = next(step for _, step in iter_steps(parse_pipeline(document).stage("s").steps)).spec
    assert isinstance(spec, HarnessApprovalSpec)
    assert [rule.minimum_count for rule in spec.approvers.rules] == [1, 2]
    assert spec.auto_reject_previous and spec.timeout_action == "Reject"
    assert spec.approver_inputs[0].allowed_values == ("slow", "normal")


def test_approval_policy_that_nobody_could_satisfy_is_refused() -> None:
    document = pipeline(
        stage(
            "s",
            approval("a", approvers={"users": ["ada"], "minimumCount": 2}),
            approval("b", approverInputs=[{"name": "x", "defaultValue": "z", "allowedValues": ["y"]}, {"name": "x"}]),
            # The approval domain's rule, asked early: Alice and alice are one person, as when votes are counted.
            approval("c", approvers={"users": ["Alice", "alice"], "minimumCount": 2}),
        )
    )
    found = issues(document)
    assert found[0].endswith("steps[0].step.spec.approvers: minimumCount 2 exceeds the 1 listed user")
    assert any(p.endswith("steps[2].step.spec.approvers: minimumCount 2 exceeds the 1 listed user") for p in found)
    assert any(
        p.endswith("steps[1].step.spec.approverInputs[0]: defaultValue 'z' is not one of allowedValues") for p in found
    )


def test_use_from_stage_propagates_the_service(catalog: Catalog) -> None:
    document = pipeline(
        deployment("staging", shell("a")),
        stage(
            "prod",
            shell("b"),
            type="Deployment",
            service={"useFromStage": {"stage": "staging"}},
            environment={"environmentRef": "prod_eu", "infrastructureDefinitions": [{"identifier": "eks_eu"}]},
        ),
        stage(
            "bad",
            shell("c"),
            type="Deployment",
            service={"useFromStage": {"stage": "later"}},
            environment={"environmentRef": "prod_us"},
        ),
    )
    assert issues(document, catalog) == [
        "pipeline.stages[2].stage.spec.service.useFromStage.stage: useFromStage names 'later', which is not an "
        "earlier deployment stage"
    ]
    document["pipeline"]["stages"].pop()
    md = parse_pipeline(document, catalog=catalog).stage("prod").deployment
    assert md is not None and md.service_refs == ("checkout",)


def test_parallel_stages_parse() -> None:
    parsed = parse_pipeline(
        pipeline(stage("a", shell("x")), {"parallel": [stage("b", shell("y")), stage("c", shell("z"))]})
    )
    assert isinstance(parsed.items[1], ParallelStages)
    assert [s.identifier for s in parsed.stages()] == ["a", "b", "c"]


def test_deployment_stage_needs_service_and_environment() -> None:
    document = pipeline(stage("d", shell("x"), type="Deployment"))
    assert issues(document) == [
        "pipeline.stages[0].stage.spec: a Deployment stage needs 'service' or 'services'",
        "pipeline.stages[0].stage.spec: a Deployment stage needs 'environment', 'environments' or 'environmentGroup'",
    ]


def test_document_shape_errors() -> None:
    assert issues("- not a pipeline\n") == [
        "(root): expected a document with a top-level 'pipeline' key (a mapping), got a list"
    ]
    assert issues("pipelines: {}\n") == ["(root): expected a top-level 'pipeline' key"]
    assert issues({"pipeline": {"name": "x", "identifier": "x", "stages": []}}) == [
        "pipeline.stages: expected a non-empty list of stages"
    ]
    dup = "pipeline:\n  name: a\n  name: b\n"
    assert issues(dup)[0].startswith("(root): line 3, column 3: while constructing a mapping duplicate key 'name'")
    with pytest.raises(PipelineError, match="invalid pipeline"):
        parse_pipeline({"pipeline": {"name": "x", "identifier": "1x", "stages": [stage("s", shell("a"))]}})


def test_shell_script_spec_details() -> None:
    document = pipeline(
        stage(
            "s",
            shell(
                "a",
                "echo $X",
                outputs=("result",),
                spec={"environmentVariables": [{"name": "X", "type": "Number", "value": 3}], "retryOnRestart": True},
            ),
        )
    )
    step = next(step for _, step in iter_steps(parse_pipeline(document).stage("s").steps))
    assert isinstance(step.spec, ShellScriptSpec)
    assert step.effective_timeout == "10m"
    assert step.spec.environment_variables[0].value == "3"
    assert step.spec.output_variables[0].shell_variable == "RESULT"
    assert step.spec.retry_on_restart


def test_parsing_leaves_expressions_that_cannot_resolve_to_the_start_check() -> None:
    """A stored execution's document is parsed again when it loads: refusing its expressions here would strand it.
    The start check (`signoff.executor.validation.expression_problems`) refuses them before a new one starts."""
    document = pipeline(stage("s", shell("a", "echo <+pipeline.stages.nosuch.name> <+unclosed")))
    assert issues(document) == []


def test_a_nul_character_in_the_text_is_one_issue_at_its_path() -> None:
    text = textwrap.dedent(
        """\
        pipeline:
          name: "Te\\0st"
          identifier: test_pipeline
          stages: []
        """
    )
    expected = [Issue("pipeline.name", "contains a NUL character")]
    assert validate_pipeline(text) == expected
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="p.yaml")
    assert caught.value.issues == expected
