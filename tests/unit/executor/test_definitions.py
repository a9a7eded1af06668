"""Definitions: one parse and one plan per distinct pipeline document, whatever the number of loads."""

from __future__ import annotations

import json

import pytest

from signoff.executor.domain.definitions import Definitions, definition_hash
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.pipeline import PipelineError, parse_pipeline
from signoff.executor.domain.state import StepStatus
from tests.unit.executor.builders import pipeline, shell, stage
from tests.unit.executor.test_execution import T0, start


def test_the_hash_ignores_key_order_and_sees_every_value():
    assert definition_hash({"a": 1, "b": {"c": 2}}) == definition_hash({"b": {"c": 2}, "a": 1})
    assert definition_hash({"a": 1}) != definition_hash({"a": 2})


def test_restoring_the_same_definition_parses_it_once_and_shares_pipeline_and_plan():
    definitions = Definitions()
    first = start(pipeline(stage("s", shell("a"), shell("b"))))
    second = start(pipeline(stage("s", shell("a"), shell("b"))))
    first.next_actions(T0)
    rows = [json.loads(json.dumps(e.to_dict())) for e in (first, second, first)]
    restored = [Execution.from_dict(row, definitions=definitions) for row in rows]
    assert definitions.parsed == 1 and len(definitions) == 1
    assert restored[0].plan is restored[1].plan is restored[2].plan
    assert restored[0].pipeline is restored[1].pipeline
    # Shared definitions, separate state: moving one execution on leaves the other where it was.
    assert restored[0].step("s.a").status == StepStatus.RUNNING
    assert restored[1].step("s.a").status == StepStatus.QUEUED
    assert restored[0].to_dict() == first.to_dict() and restored[1].to_dict() == second.to_dict()


def test_a_changed_definition_is_parsed_anew_and_the_oldest_leaves_at_capacity():
    definitions = Definitions(capacity=2)
    documents = [start(pipeline(stage("s", shell(name)))).to_dict() for name in ("a", "b", "c")]
    for document in documents:
        Execution.from_dict(document, definitions=definitions)
    assert definitions.parsed == 3 and len(definitions) == 2
    Execution.from_dict(documents[2], definitions=definitions)  # still kept
    assert definitions.parsed == 3
    Execution.from_dict(documents[0], definitions=definitions)  # was the oldest: parsed again
    assert definitions.parsed == 4


def test_an_invalid_document_raises_and_is_not_kept():
    definitions = Definitions()
    with pytest.raises(PipelineError, match="execution x"):
        definitions.get({"pipeline": {"identifier": "p"}}, source="execution x")
    assert len(definitions) == 0 and definitions.parsed == 0
    with pytest.raises(ValueError, match="capacity"):
        Definitions(capacity=0)


def test_a_started_pipeline_is_kept_and_loading_its_execution_finds_that_parse():
    # The start's parse (a handler validated it against the catalog) is the one kept: no second parse on load.
    definitions = Definitions()
    parsed = parse_pipeline(pipeline(stage("s", shell("a"), shell("b"))))
    started = start(parsed, definitions=definitions)
    again = start(parsed, definitions=definitions)
    assert len(definitions) == 1 and started.plan is again.plan
    restored = Execution.from_dict(json.loads(json.dumps(started.to_dict())), definitions=definitions)
    assert definitions.parsed == 0
    assert restored.pipeline is parsed and restored.plan is started.plan
    assert restored.to_dict() == started.to_dict()
