"""What an item costs each process a row keeps busy: CPU time read from /proc before and after a timed phase.

A row's rate says how fast; this says where the CPU went (the role, PostgreSQL, the broker, the benchmark's own
producer or sink), per item, so a run shows whether a missed target waits on something or needs more CPU than the
machine has (docs/benchmarks.md, "the CPU budget").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int]]:
    """Every process now: pid -> (parent pid, CPU ticks of its own and of the children it has reaped), from one
    pass over /proc."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # The command name (field 2) is in parentheses and may hold spaces: the fields that follow start after the
        # last ")". Fields 4 and 14-17 of proc(5): ppid; utime, stime, cutime, cstime.
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its descendants, including the children they have already reaped (a
    PostgreSQL server's ended backends are counted in its own `cutime`/`cstime`); 0 when it is gone."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in processes.items():
        children.setdefault(parent, []).append(child)
    total_ticks = 0
    pending = [pid] if pid in processes else []
    while pending:
        current = pending.pop()
        total_ticks += processes[current][1]
        pending.extend(children.get(current, ()))
    return total_ticks / _TICKS


def own_cpu_seconds() -> float:
    """User + system CPU of this process alone (not of the roles it started)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class CpuShares:
    """CPU seconds each process spent during one phase, and how many items were handled meanwhile."""

    items: int
    seconds: float
    cpu: Mapping[str, float]

    def note(self, what: str, unit: str) -> str:
        """One line for the report: `what` (e.g. "P1's burst"), then each process's CPU per `unit` and cores used."""
        if self.items == 0:
            return f"CPU per {unit}, {what}: not measured (the phase was over before its CPU was first read)"
        parts = [
            f"{name} {cpu / self.items * 1e6:,.0f} µs ({cpu / self.seconds:.2f} core)"
            for name, cpu in sorted(self.cpu.items(), key=lambda item: -item[1])
        ]
        total = sum(self.cpu.values())
        return (
            f"CPU per {unit}, {what} ({self.items:,} in {self.seconds:.1f}s): {', '.join(parts)}; "
            f"{total / self.items * 1e6:,.0f} µs in all ({total / self.seconds:.2f} core)"
        )


class CpuMeter:
    """Reads the CPU time of named processes at the start of a phase and again at its end."""

    def __init__(self, readers: Mapping[str, Callable[[], float]], clock: Callable[[], float]) -> None:
        """`readers`: process name -> a function returning its CPU seconds so far; `clock`: monotonic seconds."""
        self.readers = dict(readers)
        self.clock = clock
        self._started: tuple[float, dict[str, float]] | None = None

    def start(self) -> None:
        """Read every process's CPU so far: the phase starts now."""
        self._started = (self.clock(), {name: read() for name, read in self.readers.items()})

    def stop(self, items: int) -> CpuShares:
        """The shares since `start`, `items` handled meanwhile; a process that spent nothing measurable (idle, or
        gone) is left out rather than shown at 0."""
        assert self._started is not None, "CpuMeter.stop before start"
        began, before = self._started
        elapsed = max(self.clock() - began, 1e-9)
        cpu = {name: read() - before[name] for name, read in self.readers.items()}
        return CpuShares(items, elapsed, {name: spent for name, spent in cpu.items() if spent > 0})
