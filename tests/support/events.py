"""Valid events for runtime tests, with a chosen subject and a fresh id each."""

from __future__ import annotations

from datetime import UTC, datetime

from signoff.contracts import ApprovalCancelRequested, Event, GateKey, new_event


def make_event(subject: str) -> Event:
    """A valid ApprovalCancelRequested whose CloudEvent subject is `subject` (and a new random id)."""
    data = ApprovalCancelRequested(
        key=GateKey(pipeline_id="p", execution_id=f"e-{subject}", stage_id="s", step_id="approve", attempt=1),
        gate_id=f"gate-{subject}",
        reason="test",
        requested_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return new_event(data, source="urn:signoff:test", subject=subject)
