"""What an execution is, as persisted: its status, each step's state, and the document it started with. The
state machine (`execution.py`) moves it on; `Execution.to_dict` / `from_dict` store and restore it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from signoff.executor.domain.actions import Action, ApprovalOutcome, TriggeredBy

SCHEMA_VERSION = 1


class StepStatus(StrEnum):
    """Where one step of an execution is (Harness's step statuses, as `signoff status` prints them)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    EXPIRED = "EXPIRED"
    ABORTED = "ABORTED"
    SKIPPED = "SKIPPED"


class ExecutionStatus(StrEnum):
    """Where a whole execution is: running until every stage is done, then how it ended."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.WAITING_APPROVAL})
FAILED_STATUSES = frozenset({StepStatus.FAILED, StepStatus.APPROVAL_REJECTED, StepStatus.EXPIRED})


class StepState(BaseModel):
    """One step's state; `outputs` are a script's output variables, `approval` an approval step's outcome."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    path: str
    stage: str
    identifier: str
    name: str
    type: str
    status: StepStatus = StepStatus.QUEUED
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline: datetime | None = Field(None, description="Script timeout, wait end, or approval expiry.")
    reason: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    approval: ApprovalOutcome | None = None


class ExecutionState(BaseModel):
    """Everything an execution is, as persisted (`Execution.to_dict`). The pipeline document is kept so an
    execution resumes with the definition it started with."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    execution_id: str
    sequence_id: int
    pipeline_identifier: str
    pipeline_document: dict[str, Any]
    triggered_by: TriggeredBy
    variables: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    status: ExecutionStatus = ExecutionStatus.RUNNING
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    steps: list[StepState]
    pending_actions: list[Action] = Field(default_factory=list)
