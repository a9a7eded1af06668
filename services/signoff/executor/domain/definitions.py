"""Parsed pipeline definitions and their plans, kept by the hash of the document they came from.

An execution's row holds the pipeline document it started with; every load (each event for it, each pass of the
runner) would otherwise parse that document and build its plan again. Pipelines and plans are immutable, so one
parse serves every execution of the same definition: the start's, which validated the document (`add`), or the
first load's (`get`). Pure: a bounded in-memory map, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from signoff.executor.domain.pipeline import Pipeline, parse_pipeline
from signoff.executor.domain.plan import Plan, build_plan


def definition_hash(document: Mapping[str, Any]) -> str:
    """A stable digest of a pipeline document (the same JSON, whatever the key order)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Definitions:
    """Pipelines parsed (without catalog checks, as a restore needs) and planned, least recently used first out."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[Pipeline, Plan]] = OrderedDict()
        self.parsed = 0
        """How many documents `get` parsed (not served from the map, not added parsed): for tests and metrics."""

    def get(self, document: Mapping[str, Any], *, source: str = "<pipeline>") -> tuple[Pipeline, Plan]:
        """The pipeline of `document` and its plan, parsed once per distinct document; raises `PipelineError`
        (naming `source`) when the document is not a valid pipeline."""
        key = definition_hash(document)
        if (entry := self._hit(key)) is not None:
            return entry
        # Stored with an execution that was accepted when it started: keys refused since then must not fail it.
        pipeline = parse_pipeline(document, source=source, unknown_keys=False)
        self.parsed += 1
        return self._keep(key, pipeline)

    def add(self, pipeline: Pipeline) -> tuple[Pipeline, Plan]:
        """Keep `pipeline`, parsed and validated already (a start checks it against the catalog), with its plan
        under the hash of its document, so the loads of its executions find it instead of parsing the document
        again. When that document is kept already, the kept pipeline and plan (the same parse's result)."""
        key = definition_hash(pipeline.document)
        if (entry := self._hit(key)) is not None:
            return entry
        return self._keep(key, pipeline)

    def _hit(self, key: str) -> tuple[Pipeline, Plan] | None:
        if (entry := self._entries.get(key)) is not None:
            self._entries.move_to_end(key)
        return entry

    def _keep(self, key: str, pipeline: Pipeline) -> tuple[Pipeline, Plan]:
        entry = (pipeline, build_plan(pipeline))
        self._entries[key] = entry
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)
