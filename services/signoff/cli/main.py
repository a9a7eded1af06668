"""Entry point of the `signoff` command: service roles, developer tools and the approver's commands.

Each command's module is imported when the command runs (or when `--help` lists them all), not at startup: a
client command such as `signoff pending` must not pay for importing the api role's web framework or the
notifier's Slack client, and every e2e step runs the CLI as a process of its own."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from signoff import __version__
from signoff.cli.terminal import terminal_text

COMMANDS: dict[str, str] = {
    "dev": "signoff.cli.dev:dev",
    "schemas": "signoff.cli.schemas:schemas",
    "migrate": "signoff.cli.migrate:migrate",
    "approval": "signoff.approval.service:approval",
    "notifier": "signoff.notifier.service:notifier",
    "deliveries": "signoff.cli.deliveries:deliveries",
    "dead-letters": "signoff.cli.dead_letters:dead_letters",
    "tokens": "signoff.cli.tokens:tokens",
    "access-keys": "signoff.cli.access_keys:access_keys",
    "bench": "signoff.cli.bench:bench",
    "chaos": "signoff.cli.chaos:chaos",
    # signoff.cli.approver.COMMANDS
    "login": "signoff.cli.approver:login",
    "pending": "signoff.cli.approver:pending",
    "show": "signoff.cli.approver:show",
    "approve": "signoff.cli.approver:approve",
    "reject": "signoff.cli.approver:reject",
    "audit": "signoff.cli.approver:audit",
    "put-approval-result": "signoff.cli.approver:put_approval_result",
    "groups": "signoff.cli.approver:groups",
    "executor": "signoff.executor.service:executor",
    "script-runner": "signoff.executor.script_runner:script_runner",
    "api": "signoff.api.service:api",
    # signoff.executor.cli.COMMANDS
    "run": "signoff.executor.cli:run",
    "executions": "signoff.executor.cli:executions",
    "logs": "signoff.executor.cli:logs",
    "abort": "signoff.executor.cli:abort",
    "get-pipeline-state": "signoff.executor.cli:get_pipeline_state",
}
"""Command name -> `module:attribute` of its click command."""


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's `commands` mapping: names known up front, each command imported on first access."""

    def __init__(self, table: dict[str, str]) -> None:
        self._table = dict(table)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._table[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._table[name] = ""
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._table[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table


class SignoffGroup(click.Group):
    """The `signoff` group: click's own usage errors (an unknown command, an option out of range) are one
    `error: …` line naming where help is, exit 2, like every other error of the CLI (click prints three lines)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `signoff` (or a group) alone: its help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {terminal_text(exc.format_message())}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # `ctx.exit(n)` and --help / --version come back as n


@click.group(cls=SignoffGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="signoff")
def cli() -> None:
    """signoff: approval gates for CD pipelines, on Kafka and PostgreSQL."""


cli.commands = LazyCommands(COMMANDS)


def main() -> None:
    cli(prog_name="signoff")
