"""Reading YAML documents (catalogs, pipelines, notification routing) and reporting their problems by path.

Shared by the catalog, the executor's pipeline parser and the notifier's routing so that all name a bad spot the
same way: `pipeline.stages[1].stage.spec.execution.steps[0].step.type`. The loader is PyYAML's safe loader made
strict about duplicate mapping keys, which plain PyYAML silently resolves to the last one (a classic way to lose a
step's spec), and about alias expansion, which PyYAML leaves unbounded (yaml/pyyaml#235): its loader shares an
anchored node between its aliases, but everything that walks the loaded document (validation, JSON, a message naming
every problem) meets each alias as a full copy, so a few KiB of nested aliases (an "alias bomb") would cost gigabytes.
It also refuses text no store can hold: a double-quoted escape can put a NUL character (`"\\0"`) or a lone UTF-16
surrogate (`"\\uD800"`) in a key or a value, which PostgreSQL's text and JSON refuse (and UTF-8 cannot encode), so
such a document would be accepted here and fail wherever it is first written.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_ALIAS_NODES = 20_000
"""How many nodes YAML aliases may add to a document, each alias counted as a full copy of its anchor's node (as
anything walking the loaded document meets it); more is refused as an alias bomb. A document without aliases adds
none, so this never limits a document written out in full (the api bounds those by size: `pipeline_yaml` is at most
256 KiB). 20,000 is about what the largest pipeline the api accepts holds written out (256 KiB at the ~19 bytes per
node of examples/pipelines ≈ 14,000 nodes), and 50 times the largest example document whole (387 nodes, no
aliases): anchors reusing a step or a stage many times fit, while aliases can at most double the work of the
largest document anyone can send. Counting happens while the document is composed, from each anchor's size
(never expanding anything), so refusing a bomb costs about as much as reading its text."""
MAX_DEPTH = 100
"""How deep a YAML document may nest (mappings and sequences). The deepest example document nests 18 levels; PyYAML
composes and constructs by recursion, so a document nested some hundreds of levels deep (a few KiB of `[`) would
otherwise end in a RecursionError instead of a refusal naming its line."""

MAX_REPORTED_ISSUES = 20
"""An error message lists at most this many problems, then `and N more`: however many an expanded document has,
what is reported (a 422 body, a CLI line, a dead letter's reason) stays short."""

MAX_ISSUE_CHARS = 500
"""A reported problem longer than this (a quoted value can be the size of the document) is cut, ending in `…`."""


class YamlDocumentError(ValueError):
    """A YAML document could not be read or parsed; the message names the source and, when known, line and column,
    or the path in the document (`path`: a key or a value holding text no store can hold).

    `problem` is the problem alone, `detail` the problem after its path (when there is one), `issue` both as an
    `Issue` (at `(root)` without a path)."""

    def __init__(self, source: str, message: str, path: str | None = None) -> None:
        detail = f"{path}: {message}" if path else message
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.path = path
        self.problem = message
        self.detail = detail

    @property
    def issue(self) -> Issue:
        return Issue(self.path or "(root)", self.problem)


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a document, at `path` (dotted keys, `[n]` list indexes; `(root)` for the document itself)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def describe_issues(issues: Sequence[object], separator: str = "; ") -> str:
    """The first `MAX_REPORTED_ISSUES` of `issues` (each cut to `MAX_ISSUE_CHARS`), then `and N more`."""
    shown = [_clip(str(issue)) for issue in issues[:MAX_REPORTED_ISSUES]]
    if len(issues) > len(shown):
        shown.append(f"and {len(issues) - len(shown)} more")
    return separator.join(shown)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ISSUE_CHARS else f"{text[: MAX_ISSUE_CHARS - 1]}…"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (merge keys `<<` may still be overridden), a document
    whose aliases add more than `MAX_ALIAS_NODES` nodes, and an alias inside the node it names (a recursive
    document: it would expand forever)."""

    # Composing keeps two counts: the nodes written in the text, and the nodes of the document with every alias
    # expanded (an alias adds its anchor's expanded size, known once the anchored node is composed). PyYAML refuses
    # a repeated anchor name, so an anchor names one node per document.
    _written = 0
    _expanded = 0
    _depth = 0
    _anchor_sizes: dict[str, int]

    def compose_document(self) -> yaml.Node | None:
        self._written, self._expanded, self._depth, self._anchor_sizes = 0, 0, 0, {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            # PyYAML composes (and constructs) by recursion: a deeper document would end in a RecursionError, a
            # traceback instead of a refusal naming the line.
            problem = f"the document nests deeper than {MAX_DEPTH} levels"
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        self._depth += 1
        try:
            return self._compose_counted(parent, index, event)
        finally:
            self._depth -= 1

    def _compose_counted(self, parent: yaml.Node | None, index: Any, event: yaml.Event) -> yaml.Node:
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # refuses an undefined alias
            size = self._anchor_sizes.get(event.anchor)
            if size is None:  # its anchor's node is still being composed: the alias is inside it
                problem = f"the alias *{event.anchor} is inside the node it names (a recursive document)"
                raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
            self._expanded += size
            if self._expanded - self._written > MAX_ALIAS_NODES:
                problem = (
                    f"the document expands to more than {MAX_ALIAS_NODES} nodes beyond those written (YAML aliases, "
                    "each a full copy of its anchor's node); alias fewer or smaller parts"
                )
                raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
            return node
        before = self._expanded
        node = super().compose_node(parent, index)
        self._written += 1
        self._expanded += 1
        if event.anchor is not None:
            self._anchor_sizes[event.anchor] = self._expanded - before
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # SafeLoader reports it below with its own message
                continue  # (`key in seen` would not tell: a `!!set` key, a set, is looked up as a frozenset)
            try:
                duplicate = key in seen
            except TypeError:  # a hashable container holding an unhashable item
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            # `"\\uD83D\\uDE00"` (how JSON escapes a character beyond U+FFFF) is one character, as in JSON; PyYAML
            # would keep two surrogates, which no UTF-8 text holds. A lone surrogate stays, to be refused by path.
            value = _PAIR.sub(_join_pair, value)
        return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""A NUL character or a UTF-16 surrogate: no PostgreSQL text or JSON value holds one (nor does UTF-8 a surrogate).
PyYAML's reader refuses both as raw characters; only a double-quoted escape (`\\0`, `\\x00`, `\\uD800`) makes one."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _join_pair(match: re.Match[str]) -> str:
    return match.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _shown(text: str) -> str:
    """`text` with each NUL written `\\0` and each surrogate `\\udXXX`: safe to print, log and store."""
    return _UNSTORABLE.sub(lambda m: "\\0" if m.group() == "\x00" else f"\\u{ord(m.group()):04x}", text)


def _unstorable_problem(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return f"contains a lone surrogate ({_shown(found.group())}), not valid Unicode text"


def _unstorable_text(value: Any, path: str) -> tuple[str, str] | None:
    """(path, problem) of the first key or string of a loaded document holding a NUL or a lone surrogate, in
    document order; None when there is none. Walked only for a text with a backslash (only an escape makes one),
    its aliases bounded like any walk of the document (`MAX_ALIAS_NODES`), its depth by `MAX_DEPTH`."""
    if isinstance(value, str):
        problem = _unstorable_problem(value)
        return (path, problem) if problem else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = join_path(path, _shown(key) if isinstance(key, str) else str(key))
            if isinstance(key, str) and (problem := _unstorable_problem(key)):
                return where, f"the key {problem}"
            if (found := _unstorable_text(item, where)) is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):  # sequences; `!!omap`/`!!pairs` tuples, `!!set`
        for index, item in enumerate(value):
            if (found := _unstorable_text(item, join_path(path, index))) is not None:
                return found
    return None


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse one YAML document with the strict safe loader; errors become `YamlDocumentError` with line:column, or
    with the path (`pipeline.stages[0].stage.name`) of a key or value holding a NUL character or a lone surrogate."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlDocumentError(source, f"{where}{problem}") from exc
    except yaml.YAMLError as exc:
        raise YamlDocumentError(source, str(exc)) from exc
    if "\\" in text and (found := _unstorable_text(document, "(root)")) is not None:
        raise YamlDocumentError(source, found[1], path=found[0])
    return document


def read_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file (UTF-8)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlDocumentError(source, f"cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise YamlDocumentError(source, f"not UTF-8 text: {exc}") from exc
    return parse_yaml(text, source)


def join_path(base: str, *parts: str | int) -> str:
    """`join_path("pipeline.stages", 1, "stage")` -> `pipeline.stages[1].stage`."""
    out = "" if base in ("", "(root)") else base
    for part in parts:
        if isinstance(part, int):
            out = f"{out}[{part}]"
        elif out:
            out = f"{out}.{part}"
        else:
            out = str(part)
    return out or "(root)"


def _friendly(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling)"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def issues_from_validation_error(error: ValidationError, base: str, skip: Sequence[str] = ()) -> list[Issue]:
    """Turn a pydantic error into path-named issues under `base`.

    `skip` lists loc segments that are not part of the document (e.g. a tagged-union tag) and must be dropped.
    """
    issues = []
    for item in error.errors():
        loc = [part for part in item["loc"] if part not in skip]
        issues.append(Issue(join_path(base, *loc), _friendly(item)))
    return issues


class DocumentError(ValueError):
    """A document (`kind`: catalog, routing, pipeline) is unreadable or invalid; `issues` lists every problem by
    path in the file (its message lists the first `MAX_REPORTED_ISSUES`)."""

    kind = "document"

    def __init__(self, source: str, issues: Iterable[Issue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = describe_issues(self.issues, separator="\n  ")
        super().__init__(f"{source}: invalid {self.kind} ({len(self.issues)} problem(s)):\n  {lines}")


def read_document(path: str | Path, error: type[DocumentError]) -> Any:
    """The parsed YAML of `path`; an unreadable file or bad YAML raises `error` with the detail at `(root)`."""
    try:
        return read_yaml(path)
    except YamlDocumentError as exc:
        raise error(str(path), [exc.issue]) from None


def validate_document(model: type[M], data: Any, source: str, error: type[DocumentError], expected: str) -> M:
    """Parsed YAML / JSON (None: an empty document) as `model`; raises `error` naming every bad path, or
    `expected` at `(root)` when it is not a mapping at all."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(source, [Issue("(root)", expected)])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(source, issues_from_validation_error(exc, "")) from None
