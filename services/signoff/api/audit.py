"""A gate's audit trail as the api shows it: the approval service's trail merged with the requests the api itself
refused before they reached it (no or bad credentials), each entry also in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from signoff.api import models
from signoff.api.gates import wire_status

_OUTCOME_WORDS = {
    "io.signoff.gate.approved.v1": "gate approved",
    "io.signoff.gate.rejected.v1": "gate rejected",
    "io.signoff.gate.expired.v1": "gate expired",
    "io.signoff.gate.cancelled.v1": "gate cancelled",
}


def trail(
    gate_id: str,
    approval_rows: Sequence[Mapping[str, Any]],
    votes: Sequence[Mapping[str, Any]],
    denials: Sequence[Mapping[str, Any]],
) -> models.AuditTrail:
    """The merged trail, oldest first."""
    vote_of = {v["decision_id"]: v for v in votes}
    entries = [_approval_entry(row, vote_of.get(row["decision_id"])) for row in approval_rows]
    entries += [_denial_entry(row) for row in denials]
    entries.sort(key=lambda entry: entry.at)
    return models.AuditTrail(gate_id=gate_id, entries=entries)


def _approval_entry(row: Mapping[str, Any], vote: Mapping[str, Any] | None) -> models.AuditEntry:
    detail = dict(row["detail"] or {})
    kind, actor, reason = row["kind"], row["actor"], row["reason"]
    source = vote["source"] if vote is not None else None
    behalf = f" (submitted by {detail['submitted_by']})" if detail.get("submitted_by") else ""
    if kind == "vote" and vote is not None:
        verb = "approved" if wire_status(vote["status"]).value == "Approved" else "rejected"
        comment = f": {vote['comment']!r}" if vote["comment"] else ""
        text = f"{actor} {verb} via {source}{behalf}{comment}"
    elif kind == "refused":
        why = f": {detail['detail']}" if detail.get("detail") else ""
        text = f"decision by {actor or 'unknown'}{behalf} refused ({reason}){why}"
    elif kind == "requested":
        text = "approval requested"
    elif kind == "outcome":
        text = _OUTCOME_WORDS.get(detail.get("event", ""), "outcome")
        if detail.get("detail"):
            text += f": {detail['detail']}"
    elif kind == "cancel" and reason:
        text = f"cancel refused ({reason})"
    elif kind == "cancel":
        text = "gate cancelled" + (f" ({detail['detail']})" if detail.get("detail") else "")
    else:
        text = kind
    return models.AuditEntry(
        at=row["at"],
        kind=kind,
        decision_id=row["decision_id"],
        actor=actor,
        reason=reason,
        source=source,
        detail=detail,
        text=text,
    )


def _denial_entry(row: Mapping[str, Any]) -> models.AuditEntry:
    detail = dict(row["detail"] or {})
    who = row["actor"] or "an unauthenticated client"
    via = f" with {row['credential']}" if row["credential"] else ""
    repeated = row.get("repeated") or 0
    if repeated:  # the same refusal again within a minute of each other: counted, not listed
        detail["repeated"] = repeated
    return models.AuditEntry(
        at=row["at"],
        kind="denied",
        decision_id=None,
        actor=row["actor"],
        reason=row["reason"],
        source="api",
        detail=detail,
        text=f"request by {who}{via} refused by the api ({row['reason']}): {detail.get('detail', '')}".rstrip(": ")
        + (f" (and {repeated} more like it, each within a minute of the last)" if repeated else ""),
    )
