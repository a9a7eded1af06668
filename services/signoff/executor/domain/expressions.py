"""Harness `<+...>` expressions: what a pipeline knows so far (`Context`) and rendering text against it.

Supported: dotted paths with list indexes, e.g. `<+pipeline.variables.tag>`, `<+stage.name>`, `<+service.name>`,
`<+env.type>`, `<+infra.namespace>`, `<+artifact.tag>`, `<+execution.steps.smoke.output.outputVariables.status>`,
`<+pipeline.stages.deploy.spec.execution.steps.smoke.output.outputVariables.status>`,
`<+execution.steps.approve.output.approverInputs.foo>`,
`<+execution.steps.approve.output.approvalActivities[0].user.name>`. Method calls, operators and nested
expressions are not evaluated: they stay unresolved with a reason.

The convention (docs/pipelines.md, "Expressions"): an expression that cannot be resolved is never blanked.
`render` keeps its raw `<+...>` text in place and lists it in `Rendered.unresolved` (machine-facing text that can
be rendered again once more is known); `render_marked` writes `⟨unresolved: pipeline.variables.x⟩` instead, for
text people read. Both report the same `unresolved` list and `reasons`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EXPRESSION = re.compile(r"<\+(.*?)>")
"""One `<+...>` expression; group 1 is its body. Bodies cannot contain `>` (comparisons are not supported)."""

_PATH = re.compile(r"^[A-Za-z_$][\w$-]*(?:\.[A-Za-z_$][\w$-]*|\[\d+\])*$")
_SEGMENT = re.compile(r"\.?([A-Za-z_$][\w$-]*)|\[(\d+)\]")
_MAX_DEPTH = 5
_ROOTS = ("pipeline", "stage", "service", "env", "infra", "artifact", "artifacts", "execution")


@dataclass(frozen=True)
class Unknown:
    """A value the context knows it does not have, and why (e.g. `stage deploys 2 services`)."""

    reason: str


@dataclass(frozen=True)
class Rendered:
    """Rendered text; `unresolved` lists each expression left unresolved (raw `<+...>`, first-seen order) and
    `reasons` says why, keyed the same way."""

    text: str
    unresolved: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every expression was resolved."""
        return not self.unresolved

    def describe_unresolved(self) -> str:
        """`<+a> (reason); <+b> (reason)` for error messages."""
        return "; ".join(f"{raw} ({self.reasons.get(raw, 'unresolved')})" for raw in self.unresolved)


def find_expressions(text: str) -> list[str]:
    """The raw `<+...>` expressions in `text`, in order (repeats kept)."""
    return [match.group(0) for match in EXPRESSION.finditer(text)]


def marker(body: str) -> str:
    """The human-facing mark of an unresolved expression: `⟨unresolved: pipeline.variables.x⟩`."""
    return f"⟨unresolved: {body.strip()}⟩"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Context:
    """What is known at one point of an execution, as a tree the expressions walk. Immutable: each `with_*`
    returns a new context, so the executor builds one per step as the execution progresses.

    Values may be `Unknown(reason)`: the context then reports that reason instead of a generic one.
    """

    def __init__(self, tree: Mapping[str, Any] | None = None, current_stage: str | None = None) -> None:
        self._tree: dict[str, Any] = copy.deepcopy(dict(tree or {}))
        self._current_stage = current_stage

    def _copy(self) -> Context:
        return Context(self._tree, self._current_stage)

    # -- building ------------------------------------------------------------------------------------------------

    @classmethod
    def for_pipeline(
        cls,
        *,
        name: str,
        identifier: str,
        execution_id: str | None = None,
        sequence_id: int | None = None,
        triggered_by_name: str | None = None,
        triggered_by_email: str | None = None,
        start_ts: int | None = None,
        variables: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Context:
        """The pipeline scope: `<+pipeline.name>`, `.identifier`, `.executionId`, `.sequenceId`, `.startTs`,
        `.triggeredBy.name|email`, `.variables.x`, `.tags` (a mapping; `.tags.key` one value). A variable's value
        may itself hold expressions."""
        pipeline: dict[str, Any] = {
            "name": name,
            "identifier": identifier,
            "executionId": execution_id if execution_id is not None else Unknown("the execution has not started"),
            "sequenceId": sequence_id if sequence_id is not None else Unknown("the execution has not started"),
            "startTs": start_ts if start_ts is not None else Unknown("the execution has not started"),
            "triggeredBy": {
                "name": triggered_by_name if triggered_by_name is not None else Unknown("no trigger recorded"),
                "email": triggered_by_email if triggered_by_email is not None else Unknown("the trigger has no e-mail"),
            },
            "variables": dict(variables or {}),
            "tags": dict(tags or {}),
            "stages": {},
        }
        return cls({"pipeline": pipeline})

    def with_stage_names(self, stages: Mapping[str, tuple[str, str]]) -> Context:
        """Declare every stage's static facts (identifier -> (name, type)): `<+pipeline.stages.S.name>` resolves
        even for a stage that has not run."""
        ctx = self._copy()
        nodes = ctx._tree.setdefault("pipeline", {}).setdefault("stages", {})
        for identifier, (name, stage_type) in stages.items():
            nodes.setdefault(identifier, {}).update(identifier=identifier, name=name, type=stage_type)
        return ctx

    def with_stage(
        self, *, identifier: str, name: str, type: str | None = None, variables: Mapping[str, Any] | None = None
    ) -> Context:
        """Enter a stage: `<+stage.name>`, `<+stage.identifier>`, `<+stage.type>`, `<+stage.variables.x>`, and
        `<+execution.steps...>` now mean this stage's steps. Stage-specific scopes are cleared."""
        ctx = self._copy()
        for scope in ("service", "env", "infra", "artifact", "artifacts"):
            ctx._tree.pop(scope, None)
        ctx._tree["stage"] = {
            "identifier": identifier,
            "name": name,
            "type": type if type is not None else Unknown("no stage type"),
            "variables": dict(variables or {}),
        }
        stages = ctx._tree.setdefault("pipeline", {}).setdefault("stages", {})
        node = stages.setdefault(identifier, {})
        node.update(identifier=identifier, name=name)
        ctx._current_stage = identifier
        return ctx

    def with_scope(self, scope: str, values: Mapping[str, Any] | Unknown) -> Context:
        """Set a deployment scope: `service` (identifier, name, description), `env` (identifier, name, type,
        envGroupRef, envGroupName), `infra` (identifier, name, namespace, cluster, region, ...), `artifact`
        (image, tag; also reachable as `artifacts.primary`). `Unknown` makes every field of the scope unknown."""
        if scope not in ("service", "env", "infra", "artifact"):
            raise ValueError(f"unknown scope {scope!r}")
        ctx = self._copy()
        ctx._tree[scope] = values if isinstance(values, Unknown) else dict(values)
        if scope == "artifact":
            ctx._tree["artifacts"] = {"primary": ctx._tree[scope]}
        return ctx

    def with_sidecar(self, identifier: str, values: Mapping[str, Any]) -> Context:
        """`<+artifacts.sidecars.ID.image|tag>`."""
        ctx = self._copy()
        artifacts = ctx._tree.setdefault("artifacts", {})
        if isinstance(artifacts, Unknown):
            artifacts = ctx._tree["artifacts"] = {}
        artifacts.setdefault("sidecars", {})[identifier] = dict(values)
        return ctx

    def with_step(
        self,
        *,
        stage: str,
        identifier: str,
        groups: Sequence[str] = (),
        name: str | None = None,
        status: str | None = None,
        output: Mapping[str, Any] | Unknown | None = None,
    ) -> Context:
        """Record a step's outputs: reachable as `<+pipeline.stages.S.spec.execution.steps.ID.output...>`, and
        while in stage S as `<+execution.steps.ID.output...>` (also `execution.steps.GROUP.steps.ID...`)."""
        ctx = self._copy()
        stages = ctx._tree.setdefault("pipeline", {}).setdefault("stages", {})
        stage_node = stages.setdefault(stage, {"identifier": stage})
        steps = stage_node.setdefault("spec", {}).setdefault("execution", {}).setdefault("steps", {})
        node: dict[str, Any] = {
            "identifier": identifier,
            "output": output if isinstance(output, Unknown) else dict(output or {}),
        }
        if name is not None:
            node["name"] = name
        if status is not None:
            node["status"] = status
        _place_step(steps, identifier, groups, node)
        return ctx

    # -- resolving -----------------------------------------------------------------------------------------------

    def resolve(self, body: str) -> str | Unknown:
        """The value of one expression body (`pipeline.variables.x`), or `Unknown(reason)`."""
        return self._resolve(body.strip(), 0)

    def lookup(self, text: str) -> Any:
        """The value `text` stands for: when it is exactly one expression, its value with objects kept (a mapping
        such as `<+service.tags>` stays a mapping); otherwise `text` rendered. `Unknown(reason)` when not known."""
        match = EXPRESSION.fullmatch(text.strip())
        if match is not None:
            return self._resolve(match.group(1).strip(), 0, objects=True)
        rendered = render(text, self)
        return Unknown(rendered.describe_unresolved()) if rendered.unresolved else rendered.text

    def _resolve(self, body: str, depth: int, *, objects: bool = False) -> Any:
        head = body.split(".", 1)[0]
        if head in ("input", "secrets"):  # `<+input>`, `<+secrets.getValue("x")>`: said so, not "unsupported"
            return Unknown(_root_problem(head) or "")
        if not _PATH.match(body):
            return Unknown("unsupported expression: only dotted paths such as pipeline.variables.x are evaluated")
        segments: list[str | int] = [name if name else int(index) for name, index in _SEGMENT.findall(body)]
        root = segments[0]
        if (problem := _root_problem(str(root))) is not None:
            return Unknown(problem)
        if root == "execution":
            if self._current_stage is None:
                return Unknown("execution.* refers to the current stage, and there is none here")
            segments = ["pipeline", "stages", self._current_stage, "spec", "execution", *segments[1:]]
        node: Any = self._tree
        walked: list[str] = []
        for segment in segments:
            if isinstance(node, Unknown):
                return node
            if isinstance(segment, int):
                if not isinstance(node, list) or segment >= len(node):
                    return Unknown(f"no item [{segment}] at {'.'.join(walked) or root}")
                node = node[segment]
                walked.append(f"[{segment}]")
                continue
            if not isinstance(node, Mapping) or segment not in node:
                return Unknown(self._missing_reason(walked, segment))
            node = node[segment]
            walked.append(segment)
        if isinstance(node, Unknown):
            return node
        if node is None:
            return Unknown(f"{body} has no value")
        if isinstance(node, Mapping) and objects:
            return copy.deepcopy(dict(node))
        if isinstance(node, Mapping | list):
            return Unknown(f"{body} is an object, not a value")
        value = _scalar(node)
        if "<+" in value:
            if depth >= _MAX_DEPTH:
                return Unknown(f"expressions nested more than {_MAX_DEPTH} deep (a cycle?)")
            inner = _render(value, self, depth + 1, marked=False)
            if inner.unresolved:
                return Unknown(f"depends on {inner.describe_unresolved()}")
            return inner.text
        return value

    def _missing_reason(self, walked: list[str], segment: str) -> str:
        path = ".".join(walked)
        if path == "pipeline.variables":
            return f"no pipeline variable {segment!r}"
        if path == "stage.variables":
            return f"no stage variable {segment!r}"
        if not walked and segment in ("stage", "service", "env", "infra", "artifact", "artifacts"):
            return f"no {segment} here"
        if path == "pipeline.stages":
            return f"no stage {segment!r}"
        if len(walked) == 3 and walked[:2] == ["pipeline", "stages"] and segment == "spec":
            return f"stage {walked[2]!r} has no step outputs yet"
        if path.endswith(".execution.steps") or path.endswith(".steps"):
            return f"step {segment!r} has no outputs here (not run yet, or not in this stage)"
        if path.endswith("outputVariables"):
            return f"the step set no output variable {segment!r}"
        if path.endswith("approverInputs"):
            return f"the approval has no input {segment!r}"
        return f"{segment!r} is not known at {path or 'the top level'}"


def _place_step(steps: dict[str, Any], identifier: str, groups: Sequence[str], node: dict[str, Any]) -> None:
    # Where a step is reachable in its stage's `steps` tree: by its identifier, and through its step groups
    # (`GROUP.steps.INNER.steps.ID`; only the outermost group is at the top). `Context.with_step` and
    # `DeclaredSteps` both place steps here, so what validation accepts is what the context resolves.
    steps[identifier] = node
    container = steps
    for group in groups:
        group_node = container.setdefault(group, {"identifier": group})
        container = group_node.setdefault("steps", {})
    if groups:
        container[identifier] = node


# -- checking expressions before anything runs -------------------------------------------------------------------


def _root_problem(root: str) -> str | None:
    """Why an expression of `root` never resolves in signoff, or None for a root it evaluates."""
    if root == "input":
        return "runtime inputs (<+input>) are only supported as pipeline variable values"
    if root == "secrets":
        return "secret references are not supported"
    if root not in _ROOTS:
        return f"unknown expression root {root!r} (signoff evaluates {', '.join(_ROOTS)})"
    return None


def root_problems(text: str) -> list[str]:
    """Why expressions in `text` can never resolve by their root alone (`<+step.name>`, `<+secrets.getValue(…)>`),
    in order, each once."""
    problems: dict[str, str] = {}
    for match in _REFERENCE.finditer(text):
        root = match.group(1).split(".", 1)[0].split("[", 1)[0]
        if (problem := _root_problem(root)) is not None:
            end = text.find(">", match.end())
            raw = text[match.start() : end + 1] if end != -1 else match.group(0)
            problems.setdefault(raw, f"{_shown(raw)}: {problem}")
    return list(problems.values())


_OPEN_OR_CLOSE = re.compile(r"<\+|>|\n")
_REFERENCE = re.compile(r"<\+\s*([A-Za-z_$][\w$-]*(?:\.[A-Za-z_$][\w$-]*|\[\d+\])*)")
_SHOWN = 160


def _shown(text: str) -> str:
    line = text.split("\n", 1)[0]
    return line if len(line) <= _SHOWN else f"{line[: _SHOWN - 1]}…"


def expression_syntax_problems(text: str) -> list[str]:
    """Why some `<+` in `text` is not an expression, in order: one that no `>` on its line closes (nested
    `<+<+a>.b>` pairs are counted), and an empty `<+>`. Such text never resolves: it is refused before anything
    runs. Whatever the evaluator does not support (method calls, operators, `<+input>`, secrets) is not a problem
    here: it stays unresolved with its reason when the pipeline runs."""
    problems: list[str] = []
    opened: list[int] = []

    def unclosed() -> None:
        if opened:
            problems.append(f"unclosed expression {_shown(text[opened[0] :])!r}: no '>' closes it on its line")
            opened.clear()

    for match in _OPEN_OR_CLOSE.finditer(text):
        mark = match.group(0)
        if mark == "<+":
            opened.append(match.start())
        elif mark == ">":
            if opened:
                start = opened.pop()
                if not text[start + 2 : match.start()].strip():
                    problems.append(f"empty expression {text[start : match.end()]!r}")
        else:
            unclosed()
    unclosed()
    return problems


class DeclaredSteps:
    """The stage and step identifiers a pipeline declares, placed as the context places steps: what
    `<+pipeline.stages.S...>`, `<+pipeline.stages.S.spec.execution.steps.ID...>` and `<+execution.steps.ID...>`
    (also through step groups, `steps.GROUP.steps.ID`) can ever name. Built once per pipeline, before it runs."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Any]] = {}
        self._variables: set[str] | None = None  # None: not declared to this check (any name passes)

    def add_variables(self, names: Iterable[str]) -> None:
        """Declare the pipeline's variables: `<+pipeline.variables.NAME>` of any other name can never resolve."""
        self._variables = {*(self._variables or ()), *names}

    def add_stage(self, identifier: str) -> None:
        """Declare a stage (its steps are added with `add_step`)."""
        self._stages.setdefault(identifier, {})

    def add_step(self, stage: str, identifier: str, groups: Sequence[str] = ()) -> None:
        """Declare a step of `stage`, inside the step groups `groups` (outermost first)."""
        _place_step(self._stages.setdefault(stage, {}), identifier, groups, {"identifier": identifier})

    def reference_problems(self, text: str, stage: str | None) -> list[str]:
        """Why references in `text` name a stage or step the pipeline does not have, in order. `stage` is the stage
        whose part of the document `text` is in (what `<+execution.steps...>` means there); None outside any stage
        (a pipeline variable: the stage that uses it decides, so a step of any stage will do). Only identifiers are
        checked: whether a value is there is known when the pipeline runs, so forward references pass."""
        problems: list[str] = []
        for match in _REFERENCE.finditer(text):
            segments: list[str | int] = [
                name if name else int(index) for name, index in _SEGMENT.findall(match.group(1))
            ]
            problem = self._problem(segments, stage)
            if problem is not None:
                end = text.find(">", match.end())
                raw = text[match.start() : end + 1] if end != -1 else match.group(0)
                problems.append(f"{_shown(raw)}: {problem}")
        return problems

    def _problem(self, segments: list[str | int], stage: str | None) -> str | None:
        if segments[:2] == ["pipeline", "variables"] and len(segments) > 2 and self._variables is not None:
            if isinstance(segments[2], str) and segments[2] not in self._variables:
                return f"no pipeline variable {segments[2]!r}"
            return None
        if segments[:2] == ["execution", "steps"] and len(segments) > 2:
            if stage is not None:
                return self._step_problem(stage, segments[2:])
            if not any(self._step_problem(known, segments[2:]) is None for known in self._stages):
                return f"no stage has a step {segments[2]!r}"
            return None
        if segments[:2] == ["pipeline", "stages"] and len(segments) > 2 and isinstance(segments[2], str):
            named = segments[2]
            if named not in self._stages:
                return f"no stage {named!r} in the pipeline"
            if segments[3:6] == ["spec", "execution", "steps"] and len(segments) > 6:
                return self._step_problem(named, segments[6:])
        return None

    def _step_problem(self, stage: str, rest: list[str | int]) -> str | None:
        container = self._stages.get(stage, {})
        where = f"stage {stage!r}"
        while rest and isinstance(rest[0], str):
            identifier = rest[0]
            if identifier not in container:
                return f"no step {identifier!r} in {where}"
            if len(rest) < 3 or rest[1] != "steps" or not isinstance(rest[2], str):
                return None
            children = container[identifier].get("steps")
            if children is None:
                return f"{identifier!r} in {where} is a step, not a step group: it has no steps"
            container, where, rest = children, f"step group {identifier!r} of stage {stage!r}", rest[2:]
        return None


def _render(text: str, ctx: Context, depth: int, *, marked: bool) -> Rendered:
    unresolved: list[str] = []
    reasons: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        raw, body = match.group(0), match.group(1)
        value = ctx._resolve(body.strip(), depth)
        if isinstance(value, Unknown):
            if raw not in reasons:
                unresolved.append(raw)
                reasons[raw] = value.reason
            return marker(body) if marked else raw
        return value

    return Rendered(EXPRESSION.sub(replace, text), unresolved, reasons)


def render(text: str, ctx: Context) -> Rendered:
    """Resolve every `<+...>` in `text`; unresolved ones keep their raw text and are listed in `unresolved`."""
    return _render(text, ctx, 0, marked=False)


def render_marked(text: str, ctx: Context) -> Rendered:
    """Like `render`, but unresolved expressions become `⟨unresolved: body⟩` (for messages people read)."""
    return _render(text, ctx, 0, marked=True)


SCRIPT_VARIABLE_PREFIX = "SIGNOFF_EXPR_"
"""Environment variables that carry a script's expression values are named `SIGNOFF_EXPR_1`, `SIGNOFF_EXPR_2`, …"""

_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]+)'|\"([^\"\n]+)\"|\\?([A-Za-z_][\w.-]*))")


@dataclass(frozen=True)
class BoundScript:
    """A script whose expressions are bound as data: `text` references each value as an environment variable
    (`${SIGNOFF_EXPR_n}`, quoted for where it stands) and `values` holds them by variable name. `unresolved` and
    `reasons` are as in `Rendered` (an unresolved expression keeps its raw text, and the script must not run)."""

    text: str
    values: dict[str, str] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def as_rendered(self) -> Rendered:
        """The unresolved part, in the shape `Rendered` reports it."""
        return Rendered(self.text, self.unresolved, self.reasons)


class _Binder:
    """One pass over a Bash script that follows its quoting (plain, '…', $'…', "…", comments, here-documents) so
    each expression is replaced by a reference that expands to exactly its value where it stands. The value itself
    never enters the script text, so whatever an approver, a run's variables or the catalog put in it (`$(…)`,
    backticks, `;`, newlines, quotes) is data. Misjudging an exotic construct can only print a reference or quotes
    literally, never run a value. One exception is a quoted here-document (`<<'EOF'`), where nothing expands: the
    value is written there verbatim, refused (unresolved) if it would end the here-document early."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.values: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.unresolved: list[str] = []
        self.reasons: dict[str, str] = {}

    def _value(self, raw: str, body: str) -> str | None:
        value = self.ctx._resolve(body.strip(), 0)
        if isinstance(value, Unknown):
            if raw not in self.reasons:
                self.unresolved.append(raw)
                self.reasons[raw] = value.reason
            return None
        return value

    def _reference(self, raw: str, body: str) -> str | None:
        """`SIGNOFF_EXPR_n` for this expression (one variable per distinct expression), or None if unresolved."""
        if raw in self.names:
            return self.names[raw]
        value = self._value(raw, body)
        if value is None:
            return None
        name = f"{SCRIPT_VARIABLE_PREFIX}{len(self.names) + 1}"
        self.names[raw] = name
        self.values[name] = value
        return name

    def bind(self, text: str) -> str:
        out: list[str] = []
        state = "plain"
        heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, quoted, strip leading tabs), in order
        i, n = 0, len(text)
        while i < n:
            if state == "heredoc":
                delimiter, quoted, strip = heredocs.pop(0)
                i = self._heredoc(text, i, delimiter, quoted, strip, out)
                state = "heredoc" if heredocs else "plain"
                continue
            expression = EXPRESSION.match(text, i)
            if expression:
                raw, body = expression.group(0), expression.group(1)
                name = self._reference(raw, body)
                if name is None:
                    out.append(raw)
                elif state == "plain":
                    out.append(f'"${{{name}}}"')
                elif state == "double":
                    out.append(f"${{{name}}}")
                elif state == "single":
                    out.append(f"'\"${{{name}}}\"'")
                else:  # ansi, $'…'
                    out.append(f"'\"${{{name}}}\"$'")
                i = expression.end()
                continue
            char = text[i]
            if char == "\\" and state in ("plain", "double", "ansi"):
                out.append(text[i : i + 2])
                i += 2
                continue
            if state == "plain":
                if char == "'":
                    state = "ansi" if out and out[-1].endswith("$") and not out[-1].endswith("\\$") else "single"
                elif char == '"':
                    state = "double"
                elif char == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
                    end = text.find("\n", i)
                    end = n if end == -1 else end
                    out.append(text[i:end])  # a comment: nothing in it runs, so it is kept as written
                    i = end
                    continue
                elif char == "<" and text.startswith("<<<", i):
                    out.append("<<<")
                    i += 3
                    continue
                elif char == "<" and (heredoc := _HEREDOC.match(text, i)):
                    quoted = heredoc.group(2) is not None or heredoc.group(3) is not None or "\\" in heredoc.group(0)
                    delimiter = heredoc.group(2) or heredoc.group(3) or heredoc.group(4)
                    heredocs.append((delimiter, quoted, heredoc.group(1) == "-"))
                    out.append(heredoc.group(0))
                    i = heredoc.end()
                    continue
                elif char == "\n" and heredocs:
                    out.append(char)
                    i += 1
                    state = "heredoc"
                    continue
            elif (state in ("single", "ansi") and char == "'") or (state == "double" and char == '"'):
                state = "plain"
            out.append(char)
            i += 1
        return "".join(out)

    def _heredoc(self, text: str, i: int, delimiter: str, quoted: bool, strip: bool, out: list[str]) -> int:
        """Copy one here-document body (from `i`, through its delimiter line); returns where the script goes on."""
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end + 1
            line = text[i:end]
            i = end
            if (line.rstrip("\n").lstrip("\t") if strip else line.rstrip("\n")) == delimiter:
                out.append(line)
                return i
            out.append(self._heredoc_line(line, delimiter, quoted, strip))
        return i

    def _heredoc_line(self, line: str, delimiter: str, quoted: bool, strip: bool) -> str:
        if not quoted:

            def reference(match: re.Match[str]) -> str:
                name = self._reference(match.group(0), match.group(1))
                return match.group(0) if name is None else f"${{{name}}}"

            return EXPRESSION.sub(reference, line)

        def verbatim(match: re.Match[str]) -> str:
            value = self._value(match.group(0), match.group(1))
            return match.group(0) if value is None else value

        written = EXPRESSION.sub(verbatim, line)
        lines = written.rstrip("\n").split("\n")
        if any((part.lstrip("\t") if strip else part) == delimiter for part in lines):
            for raw in find_expressions(line):
                if raw not in self.reasons:
                    self.unresolved.append(raw)
                    self.reasons[raw] = f"its value would end the quoted here-document {delimiter!r}"
            return line
        return written


def bind_script(text: str, ctx: Context) -> BoundScript:
    """Bind every `<+...>` in a Bash script as data (see `_Binder`): the script references environment variables
    and `values` holds what they carry. Unresolved expressions keep their raw text and are listed."""
    binder = _Binder(ctx)
    bound = binder.bind(text)
    return BoundScript(bound, binder.values, binder.unresolved, binder.reasons)
