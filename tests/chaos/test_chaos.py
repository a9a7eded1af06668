"""The fault-injection suite at reduced counts (the full run writes docs/reliability.md): the roles as processes
under `signoff dev up`'s supervisor, roles killed with kill -9, every event three times, a malformed flood,
PostgreSQL frozen and the broker restarted, a burst under decisions; no loss, nothing resolved twice."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REDUCED = [
    "--requests", "300", "--decisions", "150", "--kills", "3", "--duplicated", "40", "--malformed", "150",
    "--valid", "40", "--freeze", "3", "--burst", "600", "--rate", "100", "--burst-decisions", "100",
]  # fmt: skip


def test_the_chaos_suite_at_reduced_counts_finds_no_loss(tmp_path):
    report = tmp_path / "reliability.md"
    done = subprocess.run(
        [sys.executable, "-m", "signoff", "chaos", *REDUCED, "--write", str(report)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| R")]
    assert [row.split("|")[1].strip() for row in rows] == ["R1", "R2", "R3", "R4", "R5"], done.stdout
    assert all(row.rstrip(" |").endswith("ok") for row in rows), done.stdout
    assert "kill -9 of each role" in rows[0] and "gates lost: 0" in rows[0] and "double outcomes: 0" in rows[0]
    assert "bad not dead-lettered: 0" in rows[2] and "consumer lag: 0" in rows[2]
    assert "readiness did not flip: 0" in rows[3]
    assert "command: `signoff chaos" in report.read_text()
