"""Whether a start request would run: the pipeline document parses, its refs are in the catalog, its expressions
can resolve (closed, naming stages and steps it has), its variables fit. `signoff run` and the api ask this before
publishing; the executor role checks the parse and the variables again."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from signoff.catalog import Catalog
from signoff.catalog.yamldoc import Issue, describe_issues, join_path
from signoff.executor.domain.actions import TriggeredBy
from signoff.executor.domain.execution import Execution, InvalidStart
from signoff.executor.domain.expressions import DeclaredSteps, expression_syntax_problems, root_problems
from signoff.executor.domain.pipeline import Pipeline, PipelineError, iter_steps, parse_pipeline
from signoff.executor.mapping import MESSAGE_MAX

_STAGE_PATH = re.compile(r"^pipeline\.stages\[\d+\](?:\.parallel\[\d+\])?\.stage$")
_NEVER_RUN = frozenset({"rollbackSteps"})
# A step's spec: an expression there that cannot resolve fails the step (a script, its variables, a wait, the
# approvers) when it starts, after the steps before it ran. The approval message and the inputs' defaults are shown
# with it marked instead, so an expression signoff does not evaluate (`<+codebase.branch>`) does not stop the run.
_FAILS_UNRESOLVED = re.compile(r"\.step\.spec(?:\.|$)")
_MARKED_UNRESOLVED = re.compile(r"\.spec\.(?:approvalMessage|approverInputs)(?:\.|\[|$)")
"""Keys whose steps signoff never runs (accepted and ignored): their expressions may name steps of their own."""


def pipeline_problem(exc: PipelineError) -> str:
    """A pipeline's problems on one line: `path: message; path: message`, the first `MAX_REPORTED_ISSUES` of them
    and then `and N more` (a document whose aliases repeat a mistake must not make a megabyte of message)."""
    return describe_issues(exc.issues)


class StartRefused(ValueError):
    """The pipeline cannot start; the message names the problems by path (`stages[0].stage.spec: …`)."""


def expression_problems(pipeline: Pipeline) -> list[Issue]:
    """The expressions of a parsed pipeline that can never resolve, by path in its document, in document order:
    a `<+` no `>` closes (or an empty `<+>`) in any text, and a reference to a stage or step identifier the
    pipeline does not have (`<+pipeline.stages.S...>`, `<+execution.steps.ID...>` in the stage where it is
    written). They would otherwise fail the pipeline only when the step using them starts, after the steps before
    it ran. Runtime inputs and values known only while the pipeline runs are not problems. An approval message
    written longer than the wire carries (MESSAGE_MAX) is refused too; one that grows past it only once resolved
    is cut and marked when the gate is requested (`mapping.fitting_message`)."""
    declared = DeclaredSteps()
    declared.add_variables(variable.name for variable in pipeline.variables)
    for stage in pipeline.stages():
        declared.add_stage(stage.identifier)
        for groups, step in iter_steps(stage.steps):
            declared.add_step(stage.identifier, step.identifier, groups)
    issues: list[Issue] = []

    def text(value: str, path: str, stage: str | None, references: bool) -> None:
        if path.endswith(".spec.approvalMessage") and len(value) > MESSAGE_MAX:
            issues.append(Issue(path, f"at most {MESSAGE_MAX} characters (this one has {len(value)})"))
        if "<+" not in value:
            return
        problems = expression_syntax_problems(value)
        if not problems and references:
            problems = declared.reference_problems(value, stage)
            if _FAILS_UNRESOLVED.search(path) and not _MARKED_UNRESOLVED.search(path):
                problems += root_problems(value)
        issues.extend(Issue(path, problem) for problem in problems)

    def walk(value: Any, path: str, stage: str | None, references: bool) -> None:
        if isinstance(value, str):
            text(value, path, stage, references)
        elif isinstance(value, Mapping):
            if _STAGE_PATH.match(path) and isinstance(value.get("identifier"), str):
                stage = value["identifier"]
            for key, item in value.items():
                where = join_path(path, str(key))
                if isinstance(key, str):
                    text(key, where, stage, references)
                walk(item, where, stage, references and key not in _NEVER_RUN)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, join_path(path, index), stage, references)

    walk(pipeline.document, "", None, True)
    return issues


def check_start(
    text: str, *, catalog: Catalog | None, variables: dict[str, str], user: str, source: str = "<pipeline>"
) -> Pipeline:
    """The parsed pipeline, or StartRefused with its problems on one line (the first `MAX_REPORTED_ISSUES`).

    It is CPU-bound (a large pipeline takes a while to validate): the api runs it off its event loop."""
    try:
        pipeline = parse_pipeline(text, catalog=catalog, source=source)
    except PipelineError as exc:
        raise StartRefused(f"invalid pipeline: {pipeline_problem(exc)}") from None
    if issues := expression_problems(pipeline):
        raise StartRefused(f"invalid pipeline: {describe_issues(issues)}")
    try:
        Execution.start(
            pipeline,
            execution_id="check",
            sequence_id=0,
            triggered_by=TriggeredBy(name=user),
            now=datetime.now(UTC),
            variables=variables,
            catalog=catalog,
        )
    except InvalidStart as exc:
        raise StartRefused(describe_issues(exc.problems)) from None
    return pipeline
