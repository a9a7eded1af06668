"""The shared kernel: the few approval concepts the executor and the approval service both reason about, modelled
once (a gate's key, who may approve and how many must, an approver input, a decision's and a gate's status, what a
timeout does).

Pure and small: the standard library only, no I/O, no pydantic, no imports from any role or from the wire contract.
The wire contract (`signoff.contracts`) keeps its own models, the published schema; each service maps between the
two in one module (`approval/mapping.py`, `executor/mapping.py`), once at its boundary.
"""

from signoff.kernel.gates import (
    ApprovalRule,
    ApproverInput,
    DecisionStatus,
    GateKey,
    GateStatus,
    InvalidDefinition,
    Policy,
    TimeoutAction,
    has_value,
    quorum_beyond_listed,
    user_key,
)

__all__ = [
    "ApprovalRule",
    "ApproverInput",
    "DecisionStatus",
    "GateKey",
    "GateStatus",
    "InvalidDefinition",
    "Policy",
    "TimeoutAction",
    "has_value",
    "quorum_beyond_listed",
    "user_key",
]
