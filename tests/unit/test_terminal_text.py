"""What the CLI prints of others' text is shown, never obeyed by the terminal (signoff.cli.terminal)."""

from __future__ import annotations

import pytest

from signoff.cli.terminal import terminal_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Probe\x1b[2K\rFAKE", "Probe\\x1b[2K\\rFAKE"),  # erase the line, then write over it
        ("G\x1b]0;title\x07", "G\\x1b]0;title\\x07"),  # set the window title
        ("pay\u202eusr", "pay\\u202eusr"),  # right-to-left override
        ("\x9b31m", "\\x9b31m"),  # a C1 CSI
        ("del\x7f", "del\\x7f"),
    ],
)
def test_control_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    assert terminal_text(text) == shown


def test_line_breaks_tabs_and_other_text_stay_as_they_are() -> None:
    text = "Deploy 1.4.2\tto prod\nCHG-1042 · Zürich 東京 ✓"
    assert terminal_text(text) == text
