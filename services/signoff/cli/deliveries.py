"""`signoff deliveries`: what the notifier sent, is retrying, or dead-lettered (reads the notifier schema)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import click

from signoff.cli.errors import CliError
from signoff.cli.plumbing import cli_settings, connection, echo_json
from signoff.cli.terminal import echo
from signoff.notifier.repository import SCHEMA, NotifierRepository
from signoff.runtime.settings import Settings


def _settings() -> Settings:
    return cli_settings(Settings)


async def _read(settings: Settings, gate: str | None) -> tuple[bool, list[dict[str, Any]]]:
    repository = NotifierRepository(SCHEMA)
    async with connection(settings) as conn:
        try:
            known = gate is None or await repository.gate(conn, gate) is not None
            rows = await repository.deliveries(conn, gate)
        except asyncpg.UndefinedTableError:
            raise CliError("the notifier schema is missing: run `signoff migrate`") from None
    return known, [dict(row) for row in rows]


def _line(row: dict[str, Any]) -> str:
    what = row["kind"] + (f" ({row['purpose']})" if row["purpose"] and row["kind"] != "opened" else "")
    status = row["status"]
    if status == "pending" and row["attempts"]:
        status = f"retrying (next {row['next_attempt_at'].isoformat()})"
    tries = f"{row['attempts']}/{row['max_attempts']} tries"
    error = f"  last error: {row['last_error']}" if row["last_error"] and row["status"] != "sent" else ""
    # The id is what the notifier's logs name (delivery_id), so a line here can be found there.
    return f"#{row['id']}  {row['gate_id']}  {what}  {row['channel']} -> {row['recipient']}  {status}  {tries}{error}"


@click.command("deliveries")
@click.option("--gate", "-g", "gate", help="Only this gate's deliveries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deliveries(gate: str | None, as_json: bool) -> None:
    """Show notifier deliveries: sent, retrying, or dead-lettered."""
    settings = _settings()
    known, rows = asyncio.run(_read(settings, gate))
    if not known:
        raise CliError(f"the notifier knows no gate {gate}")
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no deliveries")
        return
    for row in rows:
        echo(_line(row))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
