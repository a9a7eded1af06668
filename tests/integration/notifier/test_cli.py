"""`signoff deliveries` reads what the notifier sent, retried and dead-lettered, configured only by SIGNOFF_*."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from signoff.cli.main import cli
from tests.integration.notifier.conftest import NotifierHarness, gate_opened

pytestmark = pytest.mark.integration


async def run(notifier: NotifierHarness, *args: str, **env: str):
    environment = {
        "SIGNOFF_HOME": str(notifier.tmp_path / "home"),  # never a developer's running dev stack
        "SIGNOFF_DATABASE_URL": notifier.base_settings.database_url.get_secret_value(),
        **env,
    }
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=environment, catch_exceptions=False)


async def test_deliveries_shows_sent_and_dead_lettered(notifier: NotifierHarness) -> None:
    notifier.http.behaviour["teams"] = "404"  # a permanent error: dead-lettered at once
    await notifier.start()
    opened = gate_opened()
    await notifier.publish(opened)
    await notifier.wait_deliveries(
        opened.gate_id, lambda r: r["status"] in ("sent", "dead"), count=5, what="deliveries finished"
    )
    other = gate_opened()
    await notifier.publish(other)
    await notifier.wait_deliveries(other.gate_id, lambda r: r["status"] in ("sent", "dead"), count=5, what="other")

    result = await run(notifier, "deliveries", "--gate", opened.gate_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(opened.gate_id in line for line in lines[:5])
    teams = next(line for line in lines if "docs-teams" in line)
    assert " dead " in teams and "1/4 tries" in teams and "HTTP 404" in teams
    assert "docs-mail -> bob@example.com  sent" in result.stdout
    ids = [row["id"] for row in await notifier.deliveries(opened.gate_id)]
    assert [line.split()[0] for line in lines[:5]] == [f"#{n}" for n in ids]  # the logs' delivery_id
    assert lines[-1] == "1 dead, 4 sent"

    result = await run(notifier, "deliveries", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["gate_id"] for row in rows} == {opened.gate_id, other.gate_id} and len(rows) == 10
    assert {row["status"] for row in rows if row["channel"] == "docs-teams"} == {"dead"}


async def test_deliveries_errors_are_one_line(notifier: NotifierHarness) -> None:
    await notifier.start()
    result = await run(notifier, "deliveries", "--gate", "no-such-gate")
    assert result.exit_code == 1 and result.stderr == "error: the notifier knows no gate no-such-gate\n"
    result = await run(notifier, "deliveries", SIGNOFF_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot reach the database")
    assert len(result.stderr.splitlines()) == 1
