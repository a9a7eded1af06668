"""Whether a start request would run: the pipeline document parses, its refs are in the catalog, its variables
fit. `signoff run` and the api ask this before publishing; the executor role checks the same again."""

from __future__ import annotations

from datetime import UTC, datetime

from signoff.catalog import Catalog
from signoff.catalog.yamldoc import describe_issues
from signoff.executor.domain.actions import TriggeredBy
from signoff.executor.domain.execution import Execution, InvalidStart
from signoff.executor.domain.pipeline import Pipeline, PipelineError, parse_pipeline


def pipeline_problem(exc: PipelineError) -> str:
    """A pipeline's problems on one line: `path: message; path: message`, the first `MAX_REPORTED_ISSUES` of them
    and then `and N more` (a document whose aliases repeat a mistake must not make a megabyte of message)."""
    return describe_issues(exc.issues)


class StartRefused(ValueError):
    """The pipeline cannot start; the message names the problems by path (`stages[0].stage.spec: …`)."""


def check_start(
    text: str, *, catalog: Catalog | None, variables: dict[str, str], user: str, source: str = "<pipeline>"
) -> Pipeline:
    """The parsed pipeline, or StartRefused with its problems on one line (the first `MAX_REPORTED_ISSUES`).

    It is CPU-bound (a large pipeline takes a while to validate): the api runs it off its event loop."""
    try:
        pipeline = parse_pipeline(text, catalog=catalog, source=source)
    except PipelineError as exc:
        raise StartRefused(f"invalid pipeline: {pipeline_problem(exc)}") from None
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
