"""The bounded `pipeline` label of the approval metrics."""

from __future__ import annotations

from signoff.approval.metrics import GateMetrics


def test_the_pipeline_label_is_bounded() -> None:
    listed = GateMetrics(["payments", "checkout"])
    assert [listed.pipeline_label(p) for p in ("payments", "checkout", "docs")] == ["payments", "checkout", "other"]
    first_two = GateMetrics(pipeline_limit=2)
    assert [first_two.pipeline_label(p) for p in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        "other",
        "a",
        "other",
        "b",
    ]
