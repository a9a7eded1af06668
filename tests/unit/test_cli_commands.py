"""The CLI's command table: every command it names resolves to the click command of that name, every command the
modules offer is in it, and starting the CLI imports none of them (a client command must not pay for the roles)."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from signoff.cli.main import COMMANDS, cli


def test_every_listed_command_resolves_to_a_click_command_of_its_name() -> None:
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert isinstance(command, click.Command), name
        assert command.name == name
    assert cli.list_commands(context) == sorted(COMMANDS)


def test_the_modules_command_lists_are_all_in_the_table() -> None:
    from signoff.cli.approver import COMMANDS as APPROVER_COMMANDS
    from signoff.executor.cli import COMMANDS as EXECUTOR_COMMANDS

    for command in (*APPROVER_COMMANDS, *EXECUTOR_COMMANDS):
        assert cli.commands.get(command.name) is command


def test_unknown_commands_are_not_found() -> None:
    assert cli.get_command(click.Context(cli), "no-such-command") is None
    assert cli.commands.get("no-such-command") is None


def test_starting_the_cli_imports_no_command_module() -> None:
    probe = "import json, sys, signoff.cli.main; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    # signoff.cli.terminal: how every line is printed (the usage errors of the group too); it imports only click.
    expected = {"signoff.cli", "signoff.cli.main", "signoff.cli.terminal"}
    assert {name for name in loaded if name.startswith("signoff.")} == expected
    assert not {name for name in loaded if name.split(".")[0] in {"fastapi", "aiokafka", "asyncpg", "slack_sdk"}}
