"""The README walkthrough format (tests/support/walkthrough.py): blocks, commands, promises, placeholders."""

from __future__ import annotations

import pytest

from tests.support.walkthrough import Promise, fill_in, parse_readme, promise_pattern

README = """\
Intro.

```sh
./signoffw not-a-walkthrough   # → never run
```

<!-- walkthrough demo: RUN_ID TOKEN -->
```sh
# 1. prose only
./signoffw run p.yaml --as alice   # → RUN_ID
./signoffw state \\
  --name p
# ↻ step  InProgress  token TOKEN …
# ↻ terminal 1: notifier |   text:
./signoffw approve RUN_ID --token TOKEN
# → error: refused (…): …
```

<!-- walkthrough demo -->
```sh
./signoffw logs RUN_ID
```
"""


def test_only_marked_blocks_are_read_and_same_named_blocks_join() -> None:
    (demo,) = parse_readme(README)
    assert demo.name == "demo" and demo.placeholders == ("RUN_ID", "TOKEN")
    assert [step.command for step in demo.steps] == [
        "./signoffw run p.yaml --as alice",
        "./signoffw state --name p",
        None,
        "./signoffw approve RUN_ID --token TOKEN",
        "./signoffw logs RUN_ID",
    ]
    run, state, terminal, approve, logs = demo.steps
    assert run.promises == [Promise("RUN_ID", again=False, terminal=False, line=run.line)]
    assert state.promises[0].again and state.promises[0].text == "step  InProgress  token TOKEN …"
    assert terminal.promises[0].terminal and terminal.promises[0].text == "notifier |   text:"
    assert approve.promises[0].expects_failure and not logs.promises


def test_a_promise_takes_an_unknown_placeholder_and_must_show_a_known_one() -> None:
    promise = Promise("step  InProgress  token TOKEN …", again=True, terminal=False, line=1)
    pattern = promise_pattern(promise, ("RUN_ID", "TOKEN"), {})
    match = pattern.search("  step    InProgress  token m4b-62_TL  Test")
    assert match is not None and match["TOKEN"] == "m4b-62_TL"
    known = promise_pattern(promise, ("RUN_ID", "TOKEN"), {"TOKEN": "abc"})
    assert known.search("step InProgress token abc") and not known.search("step InProgress token xyz")
    assert not pattern.search("step InProgress")  # literal text is required


def test_commands_get_known_placeholders_and_refuse_unknown_ones() -> None:
    assert fill_in("logs RUN_ID --x NOT_A_RUN_ID", ("RUN_ID",), {"RUN_ID": "e1"}) == "logs e1 --x NOT_A_RUN_ID"
    with pytest.raises(LookupError, match="RUN_ID is used before"):
        fill_in("logs RUN_ID", ("RUN_ID",), {})


def test_a_promise_without_a_command_is_refused() -> None:
    with pytest.raises(ValueError, match="no command before it"):
        parse_readme("<!-- walkthrough bad -->\n```sh\n# → something\n```\n")
