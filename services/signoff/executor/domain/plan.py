"""The ordered plan of a pipeline: stages, then steps, with step groups flattened and parallel blocks kept as
groups of lanes that run at the same time.

A step's path is `STAGE.GROUP….STEP` (identifiers cannot contain dots, so paths are unambiguous). Step identifiers
are unique within a stage, which the pipeline validation enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from signoff.executor.domain.pipeline import (
    ParallelStages,
    ParallelSteps,
    Pipeline,
    Stage,
    Step,
    StepElement,
    StepGroup,
)


@dataclass(frozen=True)
class PlannedStep:
    """A step at its place in the plan."""

    path: str
    stage: str
    groups: tuple[str, ...]
    in_parallel: bool
    step: Step

    @property
    def identifier(self) -> str:
        return self.step.identifier

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def type(self) -> str:
        return self.step.type


@dataclass(frozen=True)
class ParallelBlock:
    """Lanes that start together; each lane runs its blocks in order. The block is done when every lane is."""

    lanes: tuple[tuple[Block, ...], ...]


Block: TypeAlias = PlannedStep | ParallelBlock


@dataclass(frozen=True)
class PlannedStage:
    """A stage and its blocks, in order."""

    stage: Stage
    blocks: tuple[Block, ...]

    @property
    def identifier(self) -> str:
        return self.stage.identifier

    @property
    def name(self) -> str:
        return self.stage.name

    def steps(self) -> tuple[PlannedStep, ...]:
        """The stage's steps in document order (groups and parallel blocks flattened)."""
        return tuple(_steps(self.blocks))


@dataclass(frozen=True)
class ParallelStageBlock:
    """Stages that start together."""

    stages: tuple[PlannedStage, ...]


@dataclass(frozen=True)
class Plan:
    """The whole pipeline, in execution order."""

    items: tuple[PlannedStage | ParallelStageBlock, ...]

    def stages(self) -> tuple[PlannedStage, ...]:
        """Every stage in document order."""
        out: list[PlannedStage] = []
        for item in self.items:
            out.extend(item.stages if isinstance(item, ParallelStageBlock) else (item,))
        return tuple(out)

    def steps(self) -> tuple[PlannedStep, ...]:
        """Every step in document order (depth first)."""
        return tuple(step for stage in self.stages() for step in stage.steps())

    def step(self, path: str) -> PlannedStep:
        """The step at `path` (`stage.group.step`); KeyError when the plan has none."""
        for step in self.steps():
            if step.path == path:
                return step
        raise KeyError(path)

    def stage(self, identifier: str) -> PlannedStage:
        """The planned stage `identifier`; KeyError when the plan has none."""
        for stage in self.stages():
            if stage.identifier == identifier:
                return stage
        raise KeyError(identifier)

    def describe(self) -> str:
        """A readable outline, one line per stage, step and parallel block."""
        lines: list[str] = []
        for item in self.items:
            if isinstance(item, ParallelStageBlock):
                lines.append("parallel stages:")
                for stage in item.stages:
                    _describe_stage(stage, "  ", lines)
            else:
                _describe_stage(item, "", lines)
        return "\n".join(lines)


def _describe_stage(stage: PlannedStage, indent: str, lines: list[str]) -> None:
    lines.append(f"{indent}stage {stage.identifier} ({stage.stage.type})")
    _describe_blocks(stage.blocks, indent + "  ", lines)


def _describe_blocks(blocks: tuple[Block, ...], indent: str, lines: list[str]) -> None:
    for block in blocks:
        if isinstance(block, PlannedStep):
            lines.append(f"{indent}{block.path} [{block.type}]")
        else:
            lines.append(f"{indent}parallel:")
            for lane in block.lanes:
                lines.append(f"{indent}  lane:")
                _describe_blocks(lane, indent + "    ", lines)


def _steps(blocks: tuple[Block, ...]) -> list[PlannedStep]:
    out: list[PlannedStep] = []
    for block in blocks:
        if isinstance(block, PlannedStep):
            out.append(block)
        else:
            for lane in block.lanes:
                out.extend(_steps(lane))
    return out


def _sequence(
    elements: tuple[StepElement, ...], stage: str, groups: tuple[str, ...], in_parallel: bool
) -> tuple[Block, ...]:
    blocks: list[Block] = []
    for element in elements:
        if isinstance(element, Step):
            path = ".".join((stage, *groups, element.identifier))
            blocks.append(PlannedStep(path, stage, groups, in_parallel, element))
        elif isinstance(element, StepGroup):
            blocks.extend(_sequence(element.steps, stage, (*groups, element.identifier), in_parallel))
        elif isinstance(element, ParallelSteps):
            lanes = tuple(_sequence((item,), stage, groups, True) for item in element.items)
            blocks.append(ParallelBlock(lanes))
    return tuple(blocks)


def _plan_stage(stage: Stage) -> PlannedStage:
    return PlannedStage(stage, _sequence(stage.steps, stage.identifier, (), False))


def build_plan(pipeline: Pipeline) -> Plan:
    """The plan of a (valid) pipeline."""
    items: list[PlannedStage | ParallelStageBlock] = []
    for item in pipeline.items:
        if isinstance(item, ParallelStages):
            items.append(ParallelStageBlock(tuple(_plan_stage(stage) for stage in item.stages)))
        else:
            items.append(_plan_stage(item))
    return Plan(tuple(items))
