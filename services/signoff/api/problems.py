"""RFC 9457 problem details: every error the api answers is `application/problem+json` with a reason code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from signoff.contracts import NUL_PROBLEM, model_nul_field
from signoff.contracts.events import RefusalReason

PROBLEM_TYPE = "application/problem+json"

# The approval service's refusal reasons as HTTP statuses.
REFUSAL_STATUS: dict[str, int] = {
    RefusalReason.NOT_ELIGIBLE: 403,
    RefusalReason.SELF_APPROVAL: 403,
    RefusalReason.UNKNOWN_GATE: 404,
    RefusalReason.GATE_CLOSED: 409,
    RefusalReason.STALE_TOKEN: 409,
    RefusalReason.DUPLICATE: 409,
    RefusalReason.INVALID_INPUTS: 422,
}

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal error",
    502: "Bad gateway",
    503: "Unavailable",
}


class ApiProblem(Exception):
    """An error answer: raised anywhere in a request, rendered by the app's handler."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        decision_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors = errors or []
        self.headers = headers or {}
        self.decision_id = decision_id

    def document(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:signoff:problem:{self.code}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "instance": instance,
            "errors": self.errors,
        }
        if self.decision_id is not None:
            body["decision_id"] = self.decision_id
        return body


def refusal_problem(reason: str, detail: str, *, decision_id: str) -> ApiProblem:
    """The approval service refused a decision: its reason as a problem."""
    return ApiProblem(REFUSAL_STATUS.get(reason, 500), reason, detail, decision_id=decision_id)


def nul_problem(field: str, code: str, status: int = 422) -> ApiProblem:
    """The problem of a request whose `field` holds a NUL character (which no text column can store)."""
    return ApiProblem(status, code, f"{field}: {NUL_PROBLEM}", errors=[{"field": field, "message": NUL_PROBLEM}])


def refuse_nul(data: BaseModel, code: str) -> None:
    """Raise a 422 `code` naming the field of `data` (a request body, or an event about to be published) that holds
    a NUL character: valid for the contract, but PostgreSQL's text (a lookup, or the role consuming the event)
    could not take it, so the request would fail or be lost."""
    if (field := model_nul_field(data)) is not None:
        raise nul_problem(field, code)
