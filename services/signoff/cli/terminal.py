"""Text for a terminal: what the CLI prints of a pipeline's, a client's or a server's text is shown, never obeyed.

A pipeline name, an approval message, a comment, a token's name or an error detail comes from whoever wrote it. Sent
to a terminal as it is, an escape sequence (`ESC [2K`, `ESC ]0;…BEL`), a carriage return or a bidirectional override
could erase, rewrite or reorder what an approver reads next to it (`Probe\\rPayments`). Such characters are printed
as their escapes (`\\x1b`, `\\r`, `\\u202e`); line breaks and tabs stay. `--json` output needs none of this: JSON
escapes control characters itself."""

from __future__ import annotations

import re
from typing import Any

import click

_NOT_SHOWN_AS_IS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 control characters but line feed and tab, DEL, and the bidirectional marks and overrides."""


def terminal_text(text: str) -> str:
    """`text` with every character a terminal would act on instead of showing replaced by its escape."""
    return _NOT_SHOWN_AS_IS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def echo(message: Any = "", **kwargs: Any) -> None:
    """`click.echo` of `message` as `terminal_text`: every line the CLI prints goes through it."""
    click.echo(terminal_text(str(message)), **kwargs)
