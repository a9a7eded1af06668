"""Prometheus metrics of the executor role (besides the runtime's consumer and outbox metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from signoff.runtime.metrics import role_metrics

SCRIPTS_RUNNING = Gauge("signoff_executor_scripts_running", "ShellScript processes this replica runs now.")
SCRIPTS_WAITING = Gauge(
    "signoff_executor_scripts_waiting", "ShellScript steps of this replica waiting for a slot (SIGNOFF_MAX_SCRIPTS)."
)
SCRIPT_SECONDS = Histogram(
    "signoff_executor_script_duration_seconds",
    "Wall time of ShellScript steps, by how they ended.",
    ["outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
EXECUTIONS_FINISHED = Counter(
    "signoff_executor_executions_finished_total", "Executions that reached a final status.", ["status"]
)
REQUESTS_REFUSED = Counter(
    "signoff_executor_requests_refused_total", "Execution requests dead-lettered by the executor.", ["reason"]
)
RUNNER_PASS_SECONDS = Histogram(
    "signoff_executor_runner_pass_duration_seconds",
    "Time of one runner pass (claim, move on, commit).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

role_metrics(
    "executor",
    SCRIPTS_RUNNING,
    SCRIPTS_WAITING,
    SCRIPT_SECONDS,
    EXECUTIONS_FINISHED,
    REQUESTS_REFUSED,
    RUNNER_PASS_SECONDS,
)
