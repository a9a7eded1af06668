"""The benchmark's table: each measurement next to its same-run baseline, the ratio, the target and whether it
holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Row:
    """One target of DESIGN.md ("Performance targets"), as measured."""

    id: str
    what: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target


@dataclass
class Report:
    machine: str
    infrastructure: str
    command: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    @property
    def all_met(self) -> bool:
        return all(row.met is not False for row in self.rows)

    def as_dict(self) -> dict:
        return {**asdict(self), "all_met": self.all_met}

    def markdown(self) -> str:
        """The table as docs/benchmarks.md shows it."""
        lines = [
            f"machine: {self.machine}",
            f"infrastructure: {self.infrastructure}",
            f"command: `{self.command}`",
            "",
            "| | measurement | measured | baseline (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.id} | {r.what} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} | {_met(r.met)} |"
            for r in self.rows
        ]
        lines += ["", *(f"- {note}" for note in self.notes)] if self.notes else []
        return "\n".join(lines)


def _met(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def megabytes(count: int) -> str:
    return f"{count / 2**20:,.0f} MB"


def plan_lines(plans: dict[str, str]) -> Sequence[str]:
    return [f"plan {name}: {' / '.join(line.strip() for line in plan.splitlines())}" for name, plan in plans.items()]
