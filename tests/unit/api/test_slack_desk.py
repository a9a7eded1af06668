"""The Slack desk's own rules without Slack: a half-configured Slack stops `signoff api` with one line, and the
interactions it acknowledged are finished on shutdown, or given up (and logged) when they outlast the wait."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from signoff.api.slack import SlackDesk
from signoff.cli.main import cli


def test_a_signing_secret_without_the_token_and_key_is_one_line_and_exit_1(tmp_path) -> None:
    env = {"SIGNOFF_SLACK_SIGNING_SECRET": "s3cret-value", "SIGNOFF_SLACK_BOT_TOKEN": "xoxb-t0ken-value"}
    result = CliRunner().invoke(cli, ["api"], env={**env, "SIGNOFF_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.strip() == "error: SIGNOFF_SLACK_SIGNING_SECRET is set but SIGNOFF_SLACK_DECISION_KEY is not"
    assert "s3cret-value" not in result.output and "xoxb-t0ken-value" not in result.output


def desk() -> SlackDesk:
    # Only the task bookkeeping is exercised: no pool, desk or client is reached.
    return SlackDesk(pool=None, decisions=None, signing_secret="x", client=None)  # type: ignore[arg-type]


async def test_drain_lets_acknowledged_work_finish() -> None:
    slack, done, release = desk(), asyncio.Event(), asyncio.Event()

    async def work() -> None:
        await release.wait()
        done.set()

    slack.spawn(work(), "submission")
    asyncio.get_running_loop().call_soon(release.set)
    await slack.drain(timeout=30)
    assert done.is_set()


async def test_drain_gives_up_on_work_that_outlasts_it() -> None:
    slack, cancelled = desk(), asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise

    slack.spawn(stuck(), "submission")
    await slack.drain(timeout=0.01)
    assert cancelled.is_set() and not slack._tasks
