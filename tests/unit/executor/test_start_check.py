"""The start check (`check_start`, behind `signoff run` and the api): an alias bomb is a short one-line refusal,
however many problems a pipeline has its message lists a bounded number, and aliases in moderation still work."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from signoff.catalog.yamldoc import MAX_ALIAS_NODES, MAX_REPORTED_ISSUES
from signoff.cli.main import cli
from signoff.executor.domain.pipeline import PipelineError, parse_pipeline
from signoff.executor.validation import StartRefused, check_start, pipeline_problem
from tests.support.yaml_bombs import alias_bomb
from tests.unit.executor.builders import as_yaml, pipeline, shell, stage

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
