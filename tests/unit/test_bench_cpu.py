"""The benchmark's CPU meter against real processes: a child that burns a known amount of CPU, and one whose own
child burned it and was reaped (as PostgreSQL's ended backends are)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from signoff.bench.cpu import CpuMeter, CpuShares, own_cpu_seconds, tree_cpu_seconds

BURN = "import time\nwhile time.process_time() < {seconds}: pass\n"
TICK = 0.02  # /proc counts CPU in clock ticks (1/100 s here): allow one either side, and a little more


def _hold(code: str) -> subprocess.Popen[str]:
    """A Python process that runs `code`, says so on stdout, then waits for its stdin to close."""
    script = code + "\nimport sys\nprint('done', flush=True)\nsys.stdin.read()\n"
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "done"
    return process


def _release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


def test_a_process_cpu_is_read_from_proc():
    process = _hold(BURN.format(seconds=0.3))
    try:
        spent = tree_cpu_seconds(process.pid)
    finally:
        _release(process)
    assert 0.3 - TICK <= spent < 0.3 + 0.5  # the burn, plus the interpreter's start-up


def test_the_cpu_of_children_already_reaped_counts_for_their_parent():
    child = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {BURN.format(seconds=0.3)!r}], check=True)
    """)
    process = _hold(child)
    try:
        spent = tree_cpu_seconds(process.pid)
    finally:
        _release(process)
    assert spent >= 0.3 - TICK


def test_a_process_gone_counts_nothing():
    process = _hold("")
    _release(process)
    assert tree_cpu_seconds(process.pid) == 0


def test_the_meter_gives_each_process_its_share_of_a_phase():
    process = _hold("")
    clock = iter([10.0, 12.0])
    meter = CpuMeter({"role": lambda: tree_cpu_seconds(process.pid), "bench": own_cpu_seconds}, lambda: next(clock))
    try:
        meter.start()
        before = own_cpu_seconds()
        while own_cpu_seconds() - before < 0.2:
            pass
        shares = meter.stop(items=1000)
    finally:
        _release(process)
    assert shares.items == 1000 and shares.seconds == 2.0
    assert "role" not in shares.cpu  # it waited on its stdin all along: left out rather than shown at 0
    assert shares.cpu["bench"] >= 0.2


def test_the_note_names_each_process_cost_per_item_and_cores():
    shares = CpuShares(items=2000, seconds=4.0, cpu={"approval role": 1.2, "PostgreSQL": 0.4})
    assert shares.note("P1's burst", "request") == (
        "CPU per request, P1's burst (2,000 in 4.0s): approval role 600 µs (0.30 core), "
        "PostgreSQL 200 µs (0.10 core); 800 µs in all (0.40 core)"
    )
