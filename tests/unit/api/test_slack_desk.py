"""The Slack desk's own rules without Slack: a half-configured Slack stops `signoff api` with one line, a request
whose signature headers are not Slack's is 401 whatever they hold, and the interactions it acknowledged are
finished on shutdown, or given up (and logged) when they outlast the wait."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from signoff.api.problems import ApiProblem
from signoff.api.slack import SlackDesk
from signoff.cli.main import cli
from tests.support import slack


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


def _signature_failures() -> float:
    return REGISTRY.get_sample_value("signoff_api_authentication_failures_total", {"reason": "invalid_signature"}) or 0


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        ("abc", None),
        ("", None),
        ("1e3", None),
        ("-1", None),
        (" 1700000000", None),
        ("1700000000.5", None),
        ("9" * 5000, None),  # int() refuses it (more digits than Python converts)
        ("9" * 40, None),
        ("\u0661\u0667\u0660\u0660", None),  # Arabic-Indic digits: int() reads them, Slack never sends them
        (None, "v0=\u00e9"),  # not ASCII: hmac.compare_digest raises on it
        (None, ""),
    ],
)
async def test_signature_headers_that_are_not_slacks_are_401_and_never_an_error(
    timestamp: str | None, signature: str | None
) -> None:
    body, headers = slack.signed("x", {"type": "block_actions"})
    sent_at, sent = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    before = _signature_failures()
    with pytest.raises(ApiProblem) as refused:  # before the pool (None here) is reached
        await desk().receive(
            body, sent_at if timestamp is None else timestamp, sent if signature is None else signature
        )
    assert (refused.value.status, refused.value.code) == (401, "invalid_signature")
    assert _signature_failures() == before + 1  # counted like every other refused credential


async def test_a_body_that_is_not_utf8_is_401_and_never_an_error() -> None:
    body = b"payload=\xff"
    headers = slack.sign("x", body)  # signed over its bytes: slack_sdk's verifier would raise decoding it
    with pytest.raises(ApiProblem) as refused:
        await desk().receive(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert (refused.value.status, refused.value.code) == (401, "invalid_signature")
