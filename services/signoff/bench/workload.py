"""The events the benchmark publishes: approval requests shaped like the example request (realistic size), and
signed decisions for the gates they open."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from signoff import contracts as wire

SOURCE = "urn:signoff:bench"
DECISION_SOURCE = "bench"
APPROVER_GROUP = "bench-approvers"
APPROVER = "bench-approver"
EXECUTOR = "bench-executor"

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


def _example_request() -> dict:
    """The committed example ApprovalRequested (message, metadata, history: the size a real request has)."""
    path = Path(__file__).resolve().parents[3] / "examples" / "events" / "io.signoff.approval.requested.v1.json"
    if path.is_file():
        return json.loads(path.read_text())["data"]
    # Installed without the repository checkout: a smaller request of the same shape.
    return {
        "pipeline_name": "Bench",
        "stage_name": "Approve",
        "step_name": "Approve",
        "message": "Please review the deployment of payments-api to prod.",
        "current_stage": {"identifier": "approve", "name": "Approve", "type": "Approval"},
        "key": {"stage_id": "approve", "step_id": "approve", "attempt": 1},
    }


def requests(pipeline: str, count: int) -> list[Message]:
    """`count` ApprovalRequested of one pipeline (one execution each), approvable by APPROVER."""
    template = _example_request() | {
        "triggered_by": {"user": EXECUTOR},
        "policy": {"user_groups": [APPROVER_GROUP], "minimum_count": 1},
        "approver_inputs": [],
        "timeout": "1d",
        "timeout_action": "fail",
        "auto_reject_previous_approvals": False,
        "requested_at": datetime.now(UTC).isoformat(),
    }
    messages = []
    for index in range(count):
        data = wire.ApprovalRequested.model_validate(
            template
            | {
                "key": template.get("key", {"stage_id": "approve", "step_id": "approve", "attempt": 1})
                | {"pipeline_id": pipeline, "execution_id": f"exec-{index}"}
            }
        )
        event = wire.new_event(data, source=SOURCE)
        value, headers = wire.encode(event)
        messages.append((wire.message_key(event), value, headers))
    return messages


def decision(gate_id: str, token: str, key: bytes, *, source: str = DECISION_SOURCE) -> Message:
    """A signed approval of `gate_id` by APPROVER (signed with `key`, the key of decision `source`)."""
    data = wire.ApprovalDecision(
        decision_id=uuid.uuid4().hex,
        source=source,
        gate_id=gate_id,
        token=token,
        status="Approved",
        approver=APPROVER,
        decided_at=datetime.now(UTC),
    ).signed(key)
    event = wire.new_event(data, source=SOURCE)
    value, headers = wire.encode(event)
    return wire.message_key(event), value, headers


def directory_yaml() -> str:
    """The approval role's directory for the benchmark: one group with the approver."""
    return f"groups:\n  {APPROVER_GROUP}:\n    - user: {APPROVER}\n      email: {APPROVER}@example.com\n"


def routing_yaml(sink_url: str) -> str:
    """The notifier's routing for the benchmark: every approver's notifications to one signed webhook."""
    return (
        "channels:\n"
        "  - name: bench-hook\n"
        "    type: webhook\n"
        f"    settings: {{url: '{sink_url}'}}\n"
        "    secret_ref: bench-hook\n"
        "routes:\n"
        "  - groups: ['*']\n"
        "    channels: [bench-hook]\n"
    )
