"""The start check (`check_start`, behind `signoff run` and the api): an alias bomb is a short one-line refusal,
however many problems a pipeline has its message lists a bounded number, and aliases in moderation still work;
expressions that could never resolve (unclosed, naming a stage or step the pipeline lacks) are refused, by place,
before any step runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from signoff.catalog import Catalog
from signoff.catalog.yamldoc import MAX_ALIAS_NODES, MAX_REPORTED_ISSUES
from signoff.cli.main import cli
from signoff.executor.domain.pipeline import PipelineError, parse_pipeline
from signoff.executor.mapping import MESSAGE_MAX, fitting_message
from signoff.executor.validation import StartRefused, check_start, pipeline_problem
from tests.support.yaml_bombs import alias_bomb
from tests.unit.executor.builders import (
    EXAMPLES,
    approval,
    as_yaml,
    group,
    pipeline,
    seed_pipeline_yaml,
    shell,
    stage,
    wait,
)

ANCHORED = """\
pipeline:
  name: Anchored
  identifier: anchored
  stages:
    - stage:
        name: Build
        identifier: build
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: first
                  identifier: first
                  timeout: &timeout 5m
                  spec: &shell
                    shell: Bash
                    source: {type: Inline, spec: {script: echo hi}}
              - step: {type: ShellScript, name: second, identifier: second, timeout: *timeout, spec: *shell}
              - stepGroup:
                  name: more
                  identifier: more
                  steps:
                    - step: {type: ShellScript, name: third, identifier: third, spec: {<<: *shell, onDelegate: true}}
"""


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_in_one_short_line(levels: int) -> None:
    with pytest.raises(StartRefused) as caught:
        check_start(alias_bomb(levels), catalog=None, variables={}, user="alice", source="bomb.yaml")
    message = str(caught.value)
    assert message.startswith("invalid pipeline: (root): line ")
    assert f"the document expands to more than {MAX_ALIAS_NODES} nodes" in message and "YAML aliases" in message
    assert len(message) < 300 and "\n" not in message


def test_a_pipeline_with_a_few_anchors_and_aliases_still_parses() -> None:
    parsed = check_start(ANCHORED, catalog=None, variables={}, user="alice")
    first, second, more = parsed.stages()[0].steps
    assert (first.identifier, second.identifier, more.steps[0].identifier) == ("first", "second", "third")
    assert second.spec == first.spec and second.timeout == first.timeout == "5m"


def test_a_pipeline_error_lists_the_first_problems_then_how_many_more() -> None:
    many = MAX_REPORTED_ISSUES + 15
    document = pipeline(stage("s", *(shell(f"s{n}", spec={"typo": 1}) for n in range(many))))
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(document)
    assert len(caught.value.issues) == many  # every problem is still there for whoever wants them
    line = pipeline_problem(caught.value)
    assert line.count("unknown field") == MAX_REPORTED_ISSUES and line.endswith("; and 15 more")
    with pytest.raises(StartRefused, match=r"; and 15 more$"):
        check_start(as_yaml(document), catalog=None, variables={}, user="alice")


def test_unknown_variables_are_listed_with_the_same_bound() -> None:
    variables = {f"v{n}": "1" for n in range(MAX_REPORTED_ISSUES + 5)}
    with pytest.raises(StartRefused) as caught:
        check_start(as_yaml(pipeline(stage("s", shell("a")))), catalog=None, variables=variables, user="alice")
    assert str(caught.value).count("unknown pipeline variable") == MAX_REPORTED_ISSUES
    assert str(caught.value).endswith("; and 5 more")


def test_signoff_run_refuses_an_alias_bomb_in_one_error_line_before_calling_the_api(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    env = {"SIGNOFF_API_URL": "http://127.0.0.1:9", "SIGNOFF_TOKEN": "unused", "SIGNOFF_CATALOG_FILE": None}
    result = CliRunner().invoke(cli, ["run", str(bomb)], env=env)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bomb}: invalid pipeline: (root): line ")
    assert "expands to more than" in lines[0] and len(lines[0]) < 400
    assert result.stdout == ""


# -- expressions that could never resolve are refused before anything runs ---------------------------------------

APPROVE_PATH = "pipeline.stages[1].stage.spec.execution.steps[0].step"


def _refusal(document: dict) -> str:
    with pytest.raises(StartRefused) as caught:
        check_start(as_yaml(document), catalog=None, variables={}, user="alice")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid pipeline: ")
    return message


def _deploy_then(*steps: dict) -> dict:
    """A pipeline whose first stage deploys (a script) and whose second holds `steps`: a refusal at start means the
    deploy never ran."""
    return pipeline(stage("deploy", shell("rollout", outputs=("url",))), stage("verify", *steps))


def test_an_unclosed_expression_in_an_approval_message_is_refused_with_its_place() -> None:
    message = _refusal(_deploy_then(approval(message="Deployed <+pipeline.stages.deploy.name, approve?")))
    assert message == (
        f"invalid pipeline: {APPROVE_PATH}.spec.approvalMessage: unclosed expression "
        "'<+pipeline.stages.deploy.name, approve?': no '>' closes it on its line"
    )


def test_an_approval_message_longer_than_the_wire_carries_is_refused_with_its_place() -> None:
    message = _refusal(_deploy_then(approval(message="ü€😀 " * 10_000)))
    assert (
        message
        == f"invalid pipeline: {APPROVE_PATH}.spec.approvalMessage: at most 32768 characters (this one has 40000)"
    )


def test_a_message_that_grows_past_the_limit_once_resolved_is_cut_and_marked_not_failed() -> None:
    assert fitting_message("short") == "short"
    cut = fitting_message("x" * (MESSAGE_MAX + 1))
    assert len(cut) == MESSAGE_MAX and cut.endswith(f"[…] (cut: the message is over {MESSAGE_MAX} characters)")


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (
            shell("check", "curl <+execution.steps.check.output.outputVariables.url\necho >done"),
            "spec.source.spec.script",
        ),
        (
            shell("check", spec={"environmentVariables": [{"name": "X", "value": "<+stage.name"}]}),
            "spec.environmentVariables[0].value",
        ),
        (wait("pause", "<+pipeline.variables.pause"), "spec.duration"),
        ({"step": {**shell("check")["step"], "timeout": "<+pipeline.variables.t"}}, "timeout"),
        (approval(message="<+a <+pipeline.name>"), "spec.approvalMessage"),
        (approval(message="empty <+>"), "spec.approvalMessage"),
    ],
)
def test_an_unclosed_or_empty_expression_in_any_field_is_refused_with_its_place(step: dict, field: str) -> None:
    message = _refusal(_deploy_then(step))
    assert message.startswith(f"invalid pipeline: {APPROVE_PATH}.{field}: ")
    assert "unclosed expression" in message or "empty expression '<+>'" in message


def test_an_unclosed_expression_in_a_pipeline_variable_is_refused_with_its_place() -> None:
    document = pipeline(stage("s", shell("a")), variables=[{"name": "v", "type": "String", "value": "x <+stage.name"}])
    assert _refusal(document).startswith("invalid pipeline: pipeline.variables[0].value: unclosed expression")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        (
            "<+pipeline.stages.nosuch.spec.execution.steps.x.output.approvalActivities>",
            "no stage 'nosuch' in the pipeline",
        ),
        ("<+pipeline.stages.nosuch.name>", "no stage 'nosuch' in the pipeline"),
        (
            "<+pipeline.stages.deploy.spec.execution.steps.nosuch.output.outputVariables.url>",
            "no step 'nosuch' in stage 'deploy'",
        ),
        ("<+execution.steps.nosuch.output.approverInputs.foo>", "no step 'nosuch' in stage 'verify'"),
        # `execution.steps` means the stage it is written in: the deploy stage's step is not there.
        ("<+execution.steps.rollout.output.outputVariables.url>", "no step 'rollout' in stage 'verify'"),
        ("<+execution.steps.checks.steps.nosuch.status>", "no step 'nosuch' in step group 'checks' of stage 'verify'"),
        ("<+execution.steps.approve.steps.x.status>", "'approve' in stage 'verify' is a step, not a step group"),
    ],
)
def test_a_reference_to_a_stage_or_step_that_does_not_exist_is_refused_with_its_place(
    expression: str, problem: str
) -> None:
    document = _deploy_then(approval(message=f"Approve? {expression} ok"), group("checks", shell("smoke")))
    message = _refusal(document)
    assert message.startswith(f"invalid pipeline: {APPROVE_PATH}.spec.approvalMessage: {expression}: {problem}")


def test_a_reference_in_a_script_names_the_script_field() -> None:
    document = _deploy_then(
        shell("smoke", "curl <+pipeline.stages.deploy.spec.execution.steps.rolout.output.outputVariables.url>")
    )
    assert _refusal(document) == (
        f"invalid pipeline: {APPROVE_PATH}.spec.source.spec.script: "
        "<+pipeline.stages.deploy.spec.execution.steps.rolout.output.outputVariables.url>: "
        "no step 'rolout' in stage 'deploy'"
    )


def test_a_pipeline_variable_may_name_a_step_of_any_stage_but_not_one_of_none() -> None:
    good = {"name": "url", "type": "String", "value": "<+execution.steps.rollout.output.outputVariables.url>"}
    check_start(
        as_yaml(pipeline(stage("deploy", shell("rollout", outputs=("url",))), variables=[good])),
        catalog=None,
        variables={},
        user="alice",
    )
    bad = {**good, "value": "<+execution.steps.nosuch.output.outputVariables.url>"}
    message = _refusal(pipeline(stage("deploy", shell("rollout")), variables=[bad]))
    assert message == (
        "invalid pipeline: pipeline.variables[0].value: <+execution.steps.nosuch.output.outputVariables.url>: "
        "no stage has a step 'nosuch'"
    )


def test_a_reference_to_a_pipeline_variable_that_is_not_declared_is_refused_with_its_place() -> None:
    declared = [{"name": "tag", "type": "String", "value": "1.0"}]
    message = _refusal(
        pipeline(
            stage("deploy", shell("rollout", "echo <+pipeline.variables.tag> <+pipeline.variables.nope>")),
            variables=declared,
        )
    )
    assert message == (
        "invalid pipeline: pipeline.stages[0].stage.spec.execution.steps[0].step.spec.source.spec.script: "
        "<+pipeline.variables.nope>: no pipeline variable 'nope'"
    )
    # In an approval message too (it would have been sent as unresolved, after the deploy).
    typo = _refusal(_deploy_then(approval(message="Ship <+pipeline.variables.tga>?")))
    where = f"{APPROVE_PATH}.spec.approvalMessage"
    assert typo == f"invalid pipeline: {where}: <+pipeline.variables.tga>: no pipeline variable 'tga'"


def test_valid_forward_and_backward_references_and_runtime_values_still_start() -> None:
    """Only identifiers are checked: a step further on, a step inside a group (directly or through it), runtime
    inputs, secrets and expressions the evaluator leaves unresolved (method calls) all pass."""
    document = pipeline(
        stage(
            "deploy",
            shell(
                "rollout",
                "echo <+pipeline.stages.verify.spec.execution.steps.approve.output.approverInputs.foo>",
                outputs=("url",),
            ),
            group(
                "checks",
                group("inner", shell("smoke", "echo <+execution.steps.checks.steps.inner.steps.smoke.status>")),
            ),
            shell("after", "curl <+execution.steps.smoke.output.outputVariables.x> > out.txt 2>&1"),
        ),
        stage(
            "verify",
            approval(
                message=(
                    "<+pipeline.stages.deploy.spec.execution.steps.rollout.output.outputVariables.url> "
                    "<+pipeline.stages.deploy.spec.execution.steps.checks.steps.inner.steps.smoke.status> "
                    "<+execution.steps.approve.output.approvalActivities[0].user.name> <+pipeline.stages.later.name> "
                    "<+pipeline.variables.tag.toUpperCase()> <+<+pipeline.variables.tag>.length()> "
                    '<+secrets.getValue("token")> <+stage.name> <+service.name> a > b'
                )
            ),
        ),
        stage("later", wait("pause", "<+pipeline.variables.pause>")),
        variables=[
            {"name": "tag", "type": "String", "value": "<+input>.default(1.0)"},
            {"name": "pause", "type": "String", "value": "<+input>.default(1m).allowedValues(1m,2m)"},
        ],
    )
    check_start(as_yaml(document), catalog=None, variables={}, user="alice")


def test_steps_signoff_never_runs_may_name_steps_of_their_own() -> None:
    document = pipeline(stage("deploy", shell("rollout")))
    document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["rollbackSteps"] = [
        shell("undo", "echo <+execution.steps.undo.status>")
    ]
    check_start(as_yaml(document), catalog=None, variables={}, user="alice")
    document["pipeline"]["stages"][0]["stage"]["spec"]["execution"]["rollbackSteps"] = [shell("undo", "echo <+x")]
    assert "rollbackSteps[0].step.spec.source.spec.script: unclosed expression" in _refusal(document)


def test_the_seed_and_the_example_pipelines_still_start() -> None:
    check_start(seed_pipeline_yaml(), catalog=None, variables={}, user="alice")
    catalog = Catalog.load(EXAMPLES / "catalog.yaml")
    for path in sorted((EXAMPLES / "pipelines").glob("*.yaml")):
        check_start(path.read_text(), catalog=catalog, variables={}, user="alice", source=str(path))


def test_signoff_run_refuses_a_reference_to_a_missing_stage_before_calling_the_api(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(as_yaml(_deploy_then(approval(message="<+pipeline.stages.nosuch.name>"))))
    env = {"SIGNOFF_API_URL": "http://127.0.0.1:9", "SIGNOFF_TOKEN": "unused", "SIGNOFF_CATALOG_FILE": None}
    result = CliRunner().invoke(cli, ["run", str(file)], env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {file}: invalid pipeline: {APPROVE_PATH}.spec.approvalMessage: <+pipeline.stages.nosuch.name>: "
        "no stage 'nosuch' in the pipeline"
    )


# -- text PostgreSQL cannot store (a NUL character, a lone surrogate) is refused by path -------------------------

FIRST_APPROVAL = "pipeline.stages[0].stage.spec.execution.steps[0].step.spec"


@pytest.mark.parametrize(
    ("step", "where"),
    [
        (approval(message="nul\0here"), "approvalMessage: contains a NUL character"),
        (
            approval(message="sur\ud800rogate"),
            "approvalMessage: contains a lone surrogate (\\ud800), not valid Unicode text",
        ),
        (approval(**{"ke\0y": "v"}), "ke\\0y: the key contains a NUL character"),
        (
            approval(**{"ke\udfffy": "v"}),
            "ke\\udfffy: the key contains a lone surrogate (\\udfff), not valid Unicode text",
        ),
    ],
    ids=["nul-value", "surrogate-value", "nul-key", "surrogate-key"],
)
def test_a_nul_character_or_a_lone_surrogate_is_refused_naming_its_path(step: dict, where: str) -> None:
    text = as_yaml(pipeline(stage("s", step)))  # the YAML writes them as double-quoted escapes (`"nul\0here"`)
    assert "\x00" not in text and "\\" in text
    message = _refusal(pipeline(stage("s", step)))
    assert message == f"invalid pipeline: {FIRST_APPROVAL}.{where}"
    assert "\x00" not in message and message.encode("utf-8")  # storable: the refusal is written to PostgreSQL


def test_signoff_run_refuses_a_nul_character_before_calling_the_api(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(as_yaml(pipeline(stage("s", approval(message="nul\0here")))))
    env = {"SIGNOFF_API_URL": "http://127.0.0.1:9", "SIGNOFF_TOKEN": "unused", "SIGNOFF_CATALOG_FILE": None}
    result = CliRunner().invoke(cli, ["run", str(file)], env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {file}: invalid pipeline: {FIRST_APPROVAL}.approvalMessage: contains a NUL character"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    "yaml_text",
    [
        # A flow mapping's comma cuts the value at `allowedValues(dev`; `prod)` becomes a key of its own.
        "- {name: env, type: String, value: <+input>.allowedValues(dev,prod)}",
        "- {name: env, type: String, value: '<+input>.default(world}'}",
    ],
)
def test_a_malformed_runtime_input_is_refused_before_anything_runs(yaml_text: str) -> None:
    document = as_yaml(pipeline(stage("deploy", shell("build", "echo <+pipeline.variables.env>"))))
    text = document.replace("  stages:", "  variables:\n  " + yaml_text + "\n  stages:", 1)
    with pytest.raises(StartRefused) as refused:
        check_start(text, catalog=None, variables={"env": "staging"}, user="alice")
    assert str(refused.value).startswith("invalid pipeline: pipeline.variables[0].value: malformed runtime input: ")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("<+step.name>", "unknown expression root 'step' (signoff evaluates pipeline, stage, service, env, infra, "
         "artifact, artifacts, execution)"),
        ('<+secrets.getValue("token")>', "secret references are not supported"),
        ("<+codebase.branch>", "unknown expression root 'codebase'"),
    ],
)  # fmt: skip
def test_an_expression_signoff_never_evaluates_in_a_script_is_refused_before_anything_runs(
    expression: str, problem: str
) -> None:
    """It would fail the step only once it starts: after the deploy, and after people approved."""
    message = _refusal(_deploy_then(shell("smoke", f"echo {expression}")))
    assert message.startswith(f"invalid pipeline: {APPROVE_PATH}.spec.source.spec.script: {expression}: {problem}")


def test_in_an_approval_message_or_an_input_default_it_is_only_marked_when_shown() -> None:
    step = approval(
        message="Approve <+codebase.branch>?", approverInputs=[{"name": "by", "defaultValue": "<+step.name>"}]
    )
    check_start(as_yaml(_deploy_then(step)), catalog=None, variables={}, user="alice")
