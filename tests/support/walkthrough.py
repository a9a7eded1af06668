"""The README's walkthroughs as data: the shell blocks it marks, their commands, and the outputs it promises.

A walkthrough block is a fenced `sh` block right after an HTML comment naming the walkthrough and the placeholders
the reader fills in from what the steps print:

    <!-- walkthrough first-approval: EXECUTION_ID GATE_ID THE_TOKEN -->

Blocks with the same name are one walkthrough, run in order in one shell. In a block, every line that is not a
comment is a command (a trailing backslash continues it). A promise follows a command, on its line or on the lines
after it:

    ./signoffw run examples/pipelines/blue-green.yaml      # → EXECUTION_ID
    # ↻ terminal 1: notifier |   text:

`→ TEXT`: one line of the command's output (stdout and stderr) matches TEXT. `↻ TEXT`: the same once the system got
there; the command is run again until it does. `terminal 1:` checks the dev stack's own output (`dev up`'s
terminal) instead. In TEXT, `…` stands for anything on the line and a run of spaces for any run of spaces; a
placeholder not yet known is taken from the output (a word), a known one must appear as it was. A command's exit
status must be 0, unless one of its promises starts with `error:` (then it must fail). Commands get each known
placeholder written in (what the reader does), nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BLOCK = re.compile(
    r"<!--\s*walkthrough\s+(?P<name>[\w-]+)\s*(?::(?P<placeholders>[^>]*?))?\s*-->\s*\n"
    r"```(?:sh|bash|shell)\n(?P<body>.*?)^```",
    re.S | re.M,
)
_PROMISE = re.compile(r"^(?P<kind>[→↻])\s*(?P<terminal>terminal 1:\s*)?(?P<text>.*)$")
_INLINE = re.compile(r"\s+#\s*(?=[→↻])")
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]+")
_VALUE = r"[^\s\"',;()]+"


@dataclass(frozen=True)
class Promise:
    """What the README says an output shows."""

    text: str
    again: bool  # ↻: run the command again until it holds
    terminal: bool  # checks the dev stack's output ("terminal 1"), not the command's
    line: int

    @property
    def expects_failure(self) -> bool:
        return self.text.startswith("error:")


@dataclass
class Step:
    """One command (None for a check of terminal 1 alone) and the promises about it."""

    command: str | None
    line: int
    promises: list[Promise] = field(default_factory=list)


@dataclass
class Walkthrough:
    name: str
    placeholders: tuple[str, ...]
    steps: list[Step]


def parse_readme(text: str) -> list[Walkthrough]:
    """Every marked walkthrough of `text`, in the order it first appears."""
    walkthroughs: dict[str, Walkthrough] = {}
    for block in _BLOCK.finditer(text):
        name = block["name"]
        placeholders = tuple((block["placeholders"] or "").split())
        for word in placeholders:
            if not _PLACEHOLDER.fullmatch(word):
                raise ValueError(f"walkthrough {name}: placeholder {word!r} is not an UPPER_CASE word")
        first_line = text.count("\n", 0, block.start("body")) + 1
        walkthrough = walkthroughs.setdefault(name, Walkthrough(name, (), []))
        walkthrough.placeholders = tuple(dict.fromkeys(walkthrough.placeholders + placeholders))
        walkthrough.steps += _steps(block["body"], first_line)
    return list(walkthroughs.values())


def _steps(body: str, first_line: int) -> list[Step]:
    steps: list[Step] = []
    pending = ""
    for number, raw in enumerate(body.splitlines(), start=first_line):
        line = raw.strip()
        if pending:
            line = f"{pending} {line}"
            pending = ""
        if not line:
            continue
        if line.startswith("#"):
            promise = _promise(line[1:].strip(), number)
            if promise is None:
                continue  # prose for the reader
            if promise.terminal:
                steps.append(Step(None, number, [promise]))  # about the stack, whatever ran last
            elif steps and steps[-1].command is not None:
                steps[-1].promises.append(promise)
            else:
                raise ValueError(f"README line {number}: a promise with no command before it")
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        command, *inline = _INLINE.split(line, maxsplit=1)
        step = Step(command, number)
        if inline:
            promise = _promise(inline[0], number)
            assert promise is not None  # the split only happens before → or ↻
            step.promises.append(promise)
        steps.append(step)
    return steps


def _promise(comment: str, line: int) -> Promise | None:
    match = _PROMISE.match(comment)
    if match is None:
        return None
    return Promise(match["text"].strip(), match["kind"] == "↻", bool(match["terminal"]), line)


def promise_pattern(promise: Promise, placeholders: tuple[str, ...], known: dict[str, str]) -> re.Pattern[str]:
    """The regular expression one output line must match: `…` is anything, spaces are any spaces, a known
    placeholder is its value, an unknown one a named group that takes it."""
    alternatives = ["…", r"\s+"] + [rf"\b{name}\b" for name in sorted(placeholders, key=len, reverse=True)]
    splitter = re.compile(f"({'|'.join(alternatives)})")
    parts: list[str] = []
    taken: set[str] = set()
    pieces = [piece for piece in splitter.split(promise.text) if piece]
    for at, piece in enumerate(pieces):
        beside = pieces[max(at - 1, 0) : at + 2]
        if piece == "…":
            parts.append(".*")
        elif piece.isspace():
            parts.append(r"[ \t]*" if "…" in beside else r"[ \t]+")  # `x …` also matches a line ending in x
        elif piece in placeholders and piece in known:
            parts.append(re.escape(known[piece]))
        elif piece in placeholders:
            parts.append(f"(?P={piece})" if piece in taken else f"(?P<{piece}>{_VALUE})")
            taken.add(piece)
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def fill_in(command: str, placeholders: tuple[str, ...], known: dict[str, str]) -> str:
    """`command` with every known placeholder replaced by its value; an unknown one used there is an error."""

    def value(match: re.Match[str]) -> str:
        name = match[0]
        if name not in known:
            raise LookupError(f"{name} is used before any step printed it")
        return known[name]

    if not placeholders:
        return command
    names = "|".join(sorted(placeholders, key=len, reverse=True))
    return re.sub(rf"\b(?:{names})\b", value, command)
