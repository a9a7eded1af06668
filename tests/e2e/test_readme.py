"""The README is a test: its marked walkthroughs run as written, in order, in a copy of the checkout in a private
folder with its dev stack started the README's way, and every output it promises is checked (the format is in
tests/support/walkthrough.py). Only the placeholders the README names are filled in, from what the steps print."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.checkout import REPO, Checkout, private_checkout
from tests.support.waiting import eventually_sync
from tests.support.walkthrough import Promise, Step, Walkthrough, fill_in, parse_readme, promise_pattern

pytestmark = pytest.mark.e2e

WALKTHROUGHS = parse_readme((REPO / "README.md").read_text())
AGAIN_FOR = 90.0  # seconds a `↻` promise may take: a pipeline step or a notification on a busy machine


@pytest.fixture(scope="module")
def checkout() -> Iterator[Checkout]:
    with private_checkout() as checkout:
        yield checkout


class Shell:
    """One terminal: each command runs in bash with the variables and folder the previous ones left."""

    def __init__(self, checkout: Checkout, state: Path) -> None:
        self.checkout = checkout
        self.state = state
        state.write_text("")

    def run(self, command: str) -> tuple[int, str]:
        script = (
            f'source "{self.state}"\n{command}\nstatus=$?\n'
            f'{{ export -p; printf "cd %q\\n" "$PWD"; }} > "{self.state}"\nexit $status\n'
        )
        done = self.checkout.run(script)
        return done.returncode, done.stdout


def test_the_readme_marks_its_walkthroughs() -> None:
    names = [walkthrough.name for walkthrough in WALKTHROUGHS]
    assert "first-approval" in names, names
    for walkthrough in WALKTHROUGHS:
        assert any(step.promises for step in walkthrough.steps), f"{walkthrough.name} promises nothing"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("walkthrough", WALKTHROUGHS, ids=lambda w: w.name)
def test_walkthrough(walkthrough: Walkthrough, checkout: Checkout) -> None:
    shell = Shell(checkout, checkout.folder / f"{walkthrough.name}.shell")
    known: dict[str, str] = {}
    for step in walkthrough.steps:
        _run_step(step, walkthrough, shell, known)


def _run_step(step: Step, walkthrough: Walkthrough, shell: Shell, known: dict[str, str]) -> None:
    where = f"README line {step.line}"
    command = None
    if step.command is not None:
        try:
            command = fill_in(step.command, walkthrough.placeholders, known)
        except LookupError as exc:
            pytest.fail(f"{where}: {exc}")
    last: dict[str, object] = {}

    def holds() -> tuple[dict[str, str]] | None:
        status, output = shell.run(command) if command is not None else (0, "")
        problems, taken = _check(step, walkthrough, status, output, shell.checkout, known)
        last.update(output=output, problems=problems)
        return None if problems else (taken,)

    try:
        if any(promise.again for promise in step.promises):
            result = eventually_sync(holds, timeout=AGAIN_FOR, what=where)  # the reader runs it again
        elif (result := holds()) is None:
            raise AssertionError(where)
    except AssertionError:
        shown = f"$ {command}\n{last['output']}" if command is not None else _terminal_1(shell.checkout)[-4000:]
        pytest.fail(f"{where}: " + "; ".join(last["problems"]) + f"\n{shown}")
    known.update(result[0])


def _check(
    step: Step, walkthrough: Walkthrough, status: int, output: str, checkout: Checkout, known: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """What the step's output breaks of its promises, and the placeholders it gave."""
    problems: list[str] = []
    taken: dict[str, str] = {}
    if step.command is not None:
        expect_failure = any(promise.expects_failure for promise in step.promises)
        if expect_failure and status == 0:
            problems.append("it was promised to fail, and exited 0")
        if not expect_failure and status != 0:
            problems.append(f"exit status {status}")
    for promise in step.promises:
        text = _terminal_1(checkout) if promise.terminal else output
        match = _first_line_matching(promise_pattern(promise, walkthrough.placeholders, known | taken), text)
        if match is None:
            problems.append(f"no line shows {_described(promise)}")
        else:
            taken |= {name: value for name, value in match.groupdict().items() if value is not None}
    return problems, taken


def _terminal_1(checkout: Checkout) -> str:
    try:
        return checkout.stack_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _first_line_matching(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    return next((m for line in text.splitlines() if (m := pattern.search(line))), None)


def _described(promise: Promise) -> str:
    return ("terminal 1: " if promise.terminal else "") + repr(promise.text)
