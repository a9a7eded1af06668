"""What the executor's state looks like from outside: an execution as a list row, and CodePipeline's
`get-pipeline-state` document. Pure functions of the executor schema's rows (the api serves them)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from signoff.executor.domain.execution import Execution
from signoff.executor.domain.state import StepStatus

# CodePipeline's words for our statuses (get-pipeline-state).
ACTION_STATUS = {
    StepStatus.RUNNING: "InProgress",
    StepStatus.WAITING_APPROVAL: "InProgress",
    StepStatus.SUCCEEDED: "Succeeded",
    StepStatus.FAILED: "Failed",
    StepStatus.APPROVAL_REJECTED: "Failed",
    StepStatus.EXPIRED: "Failed",
    StepStatus.ABORTED: "Abandoned",
}
STAGE_STATUS = {**ACTION_STATUS, StepStatus.ABORTED: "Stopped", StepStatus.SKIPPED: "Cancelled"}


def epoch(value: datetime | None) -> float | None:
    """Epoch seconds (CodePipeline's timestamps), milliseconds kept."""
    return round(value.timestamp(), 3) if value is not None else None


def execution_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    state = row["state"]
    current = [
        f"{step['path']} ({step['status']})"
        for step in state["steps"]
        if step["status"] in (StepStatus.RUNNING, StepStatus.WAITING_APPROVAL)
    ]
    return {
        "execution_id": row["id"],
        "pipeline": row["pipeline_id"],
        "pipeline_name": row["pipeline_name"],
        "sequence": row["sequence_id"],
        "status": row["status"],
        "reason": row["reason"],
        "triggered_by": (row["triggered_by"] or {}).get("user"),
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "current": current,
    }


def pipeline_state(row: Mapping[str, Any], gates: list[Mapping[str, Any]]) -> dict[str, Any]:
    """CodePipeline's `get-pipeline-state` document for the latest execution of a pipeline: pipeline, stage and
    action names are our identifiers (as `put-approval-result` takes them); a waiting approval shows its token."""
    execution = Execution.from_dict(row["state"])
    gate_of = {(g["step_path"], g["attempt"]): g for g in gates}
    stages = []
    for planned in execution.plan.stages():
        stage_status = execution.stage_status(planned.identifier)
        stage: dict[str, Any] = {"stageName": planned.identifier, "actionStates": []}
        if stage_status in STAGE_STATUS:
            stage["latestExecution"] = {
                "pipelineExecutionId": execution.execution_id,
                "status": STAGE_STATUS[stage_status],
            }
        for step_plan in planned.steps():
            step = execution.step(step_plan.path)
            action: dict[str, Any] = {"actionName": step.identifier}
            if step.status in ACTION_STATUS:
                latest: dict[str, Any] = {
                    "status": ACTION_STATUS[step.status],
                    "lastStatusChange": epoch(step.finished_at or step.started_at),
                }
                gate = gate_of.get((step.path, step.attempt))
                if step.status == StepStatus.WAITING_APPROVAL and gate is not None:
                    latest["token"] = gate["token"]
                    latest["summary"] = gate["message"]
                    latest["externalExecutionId"] = gate["gate_id"]
                elif step.approval is not None:
                    activities = step.approval.activities
                    latest["summary"] = (
                        "; ".join(a.comments for a in activities if a.comments) or step.approval.action.upper()
                    )
                    if activities:
                        latest["lastUpdatedBy"] = activities[-1].approver.name
                elif step.reason:
                    latest["summary"] = step.reason
                action["latestExecution"] = latest
            stage["actionStates"].append(action)
        stages.append(stage)
    return {
        "pipelineName": row["pipeline_id"],
        "pipelineVersion": 1,
        "created": epoch(row["started_at"]),
        "updated": epoch(row["updated_at"]),
        "pipelineExecutionId": execution.execution_id,
        "status": row["status"],
        "stageStates": stages,
    }
