"""Shared paths and helpers for the contract tests: the committed example events are the sample data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "events"
SCHEMAS = REPO / "schemas"


def example(name: str) -> dict[str, Any]:
    """The example event `examples/events/<name>.json` as a JSON object (a fresh copy each call)."""
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def to_bytes(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.fixture
def requested() -> dict[str, Any]:
    return example("io.signoff.approval.requested.v1")
