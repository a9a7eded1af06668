"""One-line errors and non-zero exits for the CLI."""

from __future__ import annotations

import click

from signoff.cli.terminal import terminal_text


class CliError(click.ClickException):
    """A user-facing failure: printed as one `error: …` line, exit code 1 (2 for usage errors, click's own)."""

    exit_code = 1

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {terminal_text(self.format_message())}", err=True)


class CliUsageError(CliError):
    """Invalid input: one `error: …` line, exit code 2 (like click's usage errors, without the usage block)."""

    exit_code = 2
