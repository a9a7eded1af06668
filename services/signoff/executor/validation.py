"""Whether a start request would run: the pipeline document parses, its refs are in the catalog, its variables
fit. `signoff run` and the api ask this before publishing; the executor role checks the same again."""

from __future__ import annotations

from datetime import UTC, datetime

from signoff.catalog import Catalog
from signoff.executor.domain.actions import TriggeredBy
from signoff.executor.domain.execution import Execution, InvalidStart
from signoff.executor.domain.pipeline import Pipeline, PipelineError, parse_pipeline


def pipeline_problem(exc: PipelineError) -> str:
    """A pipeline's problems on one line: `path: message; path: message`."""
    return "; ".join(str(issue) for issue in exc.issues)


class StartRefused(ValueError):
    """The pipeline cannot start; the message names the problems by path (`stages[0].stage.spec: …`)."""


def check_start(
    text: str, *, catalog: Catalog | None, variables: dict[str, str], user: str, source: str = "<pipeline>"
) -> Pipeline:
    """The parsed pipeline, or StartRefused with every problem on one line."""
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
        raise StartRefused("; ".join(exc.problems)) from None
    return pipeline
