"""`signoff bench`: the performance targets, measured as same-run ratios (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys

import click

from signoff.bench.roles import BenchError
from signoff.bench.runner import API_RATE, ROW_IDS, BenchOptions, run
from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.plumbing import cli_settings
from signoff.runtime.logging import configure_logging
from signoff.runtime.settings import Settings


@click.command()
@click.option("--requests", "requests", default=50_000, show_default=True, help="Burst size for P1.")
@click.option("--naive-requests", default=2_000, show_default=True, help="Requests through the naive consumer.")
@click.option("--rate", default=200.0, show_default=True, help="Decisions per second for P2 and P4.")
@click.option("--seconds", default=10.0, show_default=True, help="How long each decision load runs.")
@click.option("--burst", default=20_000, show_default=True, help="Requests absorbed during P2b's decisions.")
@click.option("--pending", default=1_000_000, show_default=True, help="Pending gates for P4.")
@click.option("--notifications", default=5_000, show_default=True, help="Webhook deliveries for P3.")
@click.option("--bootstrap", help="Use this Kafka bootstrap server instead of an embedded broker.")
@click.option("--database-url", help="With --bootstrap: a PostgreSQL URL whose user may CREATE DATABASE.")
@click.option(
    "--only",
    metavar="ROWS",
    help=f"Measure only these rows, comma-separated ({', '.join(ROW_IDS)}; e.g. P2,P2b). Without P1 the gates the "
    "rows need are opened first, untimed; a row's baseline is measured with it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when a target is missed.")
def bench(
    requests: int,
    naive_requests: int,
    rate: float,
    seconds: float,
    burst: int,
    pending: int,
    notifications: int,
    bootstrap: str | None,
    database_url: str | None,
    only: str | None,
    as_json: bool,
    check: bool,
) -> None:
    """Measure the performance targets against baselines taken in the same run (embedded broker and PostgreSQL
    unless --bootstrap and --database-url are given; a fresh database per run, dropped at the end)."""
    if (bootstrap is None) != (database_url is None):
        raise CliUsageError("--bootstrap and --database-url go together (neither: an embedded stack)")
    if min(requests, naive_requests, pending, notifications, burst) < 2 or rate <= 0 or seconds <= 0:
        raise CliUsageError(
            "--requests, --naive-requests, --burst, --pending and --notifications must be at least 2, --rate and "
            "--seconds positive"
        )
    selected = None
    if only is not None:
        selected = frozenset(row.strip() for row in only.split(",") if row.strip())
        unknown = sorted(selected - set(ROW_IDS))
        if unknown or not selected:
            raise CliUsageError(f"--only takes rows among {', '.join(ROW_IDS)} (got {only!r})")
    measures_p1 = selected is None or "P1" in selected
    if measures_p1 and requests <= rate * seconds * 3 + API_RATE * seconds:
        raise CliUsageError(
            "--requests must open at least three times --rate x --seconds gates (P2, P2b and P4 decide them), "
            f"plus {API_RATE:g} x --seconds (P5) and one left for the plans"
        )
    if measures_p1 and notifications > requests:
        raise CliUsageError("--notifications cannot exceed --requests (each opened gate is one delivery)")
    settings = cli_settings(Settings)
    configure_logging(settings.log_level, settings.log_format, role="bench", stream=sys.stderr)
    options = BenchOptions(
        requests,
        naive_requests,
        rate,
        seconds,
        pending,
        notifications,
        bootstrap,
        database_url,
        burst=burst,
        only=selected,
    )
    command = "signoff bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else "signoff bench"

    def say(line: str) -> None:
        click.echo(f"bench: {line}", err=True)

    try:
        report = asyncio.run(run(options, command.strip(), say))
    except BenchError as exc:
        raise CliError(str(exc)) from exc
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.markdown())
    if check and not report.all_met:
        raise SystemExit(1)
