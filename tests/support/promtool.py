"""Prometheus's own checker, `promtool` (Debian's `prometheus` package; .ci/run installs it), and the metric names
signoff exports, for the tests of the operations pack (deploy/observability) and of every role's /metrics."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

# Every module that defines metrics; each role's process imports those of its role and the runtime's.
METRICS_MODULES = (
    "signoff.runtime.metrics",
    "signoff.approval.metrics",
    "signoff.executor.metrics",
    "signoff.notifier.metrics",
    "signoff.api.metrics",
)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_NAME = re.compile(r"\bsignoff_[a-z0-9_]+")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS…`; the test fails (not skips) when promtool is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)")
    return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def check_metrics(exposition: str) -> str:
    """What `promtool check metrics` reports about a /metrics text ("" when nothing): it exits non-zero on lint
    problems (a counter without `_total`, a missing HELP, a non-base unit, …) and on text it cannot parse."""
    done = promtool("check", "metrics", stdin=exposition)
    return "" if done.returncode == 0 and not done.stdout.strip() else (done.stdout + done.stderr).strip()


def exported_families() -> dict[str, str]:
    """signoff's metric families (name -> type) on the process's registry, every metrics module imported."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    return {family.name: family.type for family in REGISTRY.collect() if family.name.startswith("signoff_")}


def exported_series_names() -> set[str]:
    """Every series name PromQL may use: counters' `_total`, histograms' `_bucket` / `_count` / `_sum`, gauges."""
    return {name + suffix for name, kind in exported_families().items() for suffix in _SUFFIXES[kind]}
