"""Each role's /metrics serves the runtime's metrics and its own, though every role's modules are imported (as in the
test session, or a tool that imports them all)."""

from __future__ import annotations

import signoff.api.service
import signoff.approval.service
import signoff.executor.service
import signoff.notifier.service  # noqa: F401 - every role's metrics registered in this process
from signoff.runtime.metrics import RoleView


def families(role: str | None) -> set[str]:
    return {family.name for family in RoleView(role).collect() if family.name.startswith("signoff_")}


def test_a_role_serves_its_own_metrics_and_the_runtimes_only() -> None:
    approval, api, notifier = families("approval"), families("api"), families("notifier")
    runtime = {"signoff_events_consumed", "signoff_consumer_lag_records", "signoff_outbox_backlog_rows"}
    assert runtime <= approval & api & notifier
    assert {"signoff_gates_pending", "signoff_gate_wait_seconds"} <= approval
    assert not {
        name for name in approval if name.startswith(("signoff_api_", "signoff_notifier_", "signoff_executor_"))
    }
    assert "signoff_api_decisions" in api and "signoff_gates_pending" not in api and "signoff_decisions" not in api
    assert "signoff_notifier_deliveries_sent" in notifier and "signoff_gates_opened" not in notifier
    assert families(None) >= approval | api | notifier  # no role: everything (tests, tools)
