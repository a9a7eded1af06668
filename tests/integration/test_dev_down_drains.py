"""`signoff dev down` loses no work in flight: the broker keeps nothing across a restart, so the supervisor stops the
roles upstream first and lets each downstream one consume what is on its topics before it stops it. A burst of
approval requests published just before `dev down` is, after the next `dev up`, in the approval role's gates and
in the notifier's alike."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from signoff import contracts as wire
from signoff.approval.service import REQUESTS_TOPIC
from signoff.runtime.devenv import ENV_FILE, read_env_file
from signoff.runtime.kafka import make_producer
from signoff.runtime.settings import Settings
from tests.integration.approval.conftest import request
from tests.support.devcli import run_signoff, shell_env
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.integration

BURST = 1_500


def _signoff_slow(*args: str, env: dict[str, str]):
    return run_signoff(*args, env=env, timeout=240)


async def _publish_burst(bootstrap: str, count: int) -> None:
    """`count` ApprovalRequested from one producer, sent without waiting on each, then flushed."""
    producer = make_producer(Settings(kafka_bootstrap=bootstrap, kafka_enable_idempotence=False), "test-burst")
    await producer.start()
    try:
        pipeline = f"drain_{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)  # pending for a day from now: no expiry runs while the test does
        sent = []
        for _ in range(count):
            req = request(pipeline=pipeline, groups=("docs",), timeout="1d").model_copy(update={"requested_at": now})
            event = wire.new_event(req, source="urn:signoff:test")
            value, headers = wire.encode(event)
            sent.append(await producer.send(REQUESTS_TOPIC, value, key=wire.message_key(event), headers=headers))
        await producer.flush()
        await asyncio.gather(*sent)  # every one acknowledged by the broker
    finally:
        await producer.stop()


async def _gate_counts(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM approval.gates"),
            await conn.fetchval("SELECT count(*) FROM notifier.gates"),
        )
    finally:
        await conn.close()


def test_dev_down_lets_the_notifier_consume_every_gate_the_approval_role_opened() -> None:
    home = Path(tempfile.mkdtemp(prefix="signoff-devdrain-"))  # private: as root, PostgreSQL's files go elsewhere
    state = home / "dev"
    env = shell_env(home)
    try:
        up = _signoff_slow("dev", "up", "--detach", "--state-dir", str(state), env=env)
        assert up.returncode == 0, up.stderr
        asyncio.run(_publish_burst(read_env_file(state / ENV_FILE)["SIGNOFF_KAFKA_BOOTSTRAP"], BURST))
        # At once: the approval role is still opening gates, the notifier still consuming them.
        down = _signoff_slow("dev", "down", "--state-dir", str(state), env=env)
        assert down.returncode == 0, down.stderr
        log = (state / "dev-up.log").read_text(errors="replace")

        # The broker starts empty: only what PostgreSQL kept counts.
        again = _signoff_slow("dev", "up", "--detach", "--state-dir", str(state), env=env)
        assert again.returncode == 0, again.stderr
        # The first run's log is kept once, beside the new run's: the log never grows across runs.
        assert (state / "dev-up.log.1").read_text(errors="replace") == log
        assert log not in (state / "dev-up.log").read_text(errors="replace")
        dsn = read_env_file(state / ENV_FILE)["SIGNOFF_DATABASE_URL"]

        counts: list[tuple[int, int]] = []

        def all_gates_notified() -> bool:
            counts.append(asyncio.run(_gate_counts(dsn)))
            return counts[-1] == (BURST, BURST)

        try:
            eventually_sync(all_gates_notified, timeout=20, what="every gate in approval.gates and notifier.gates")
        except AssertionError:
            approval, notifier = counts[-1]
            raise AssertionError(
                f"after `dev down` and `dev up`, {BURST} requests published: {approval} rows in approval.gates, "
                f"{notifier} in notifier.gates\n--- dev-up.log of the first run (tail) ---\n{log[-3000:]}"
            ) from None
        # The stop said what it did, step by step.
        for line in ("stopping api", "waiting for executor, approval, notifier to catch up", "stopping notifier"):
            assert f"dev      | {line}" in log, log[-3000:]
    finally:
        down = _signoff_slow("dev", "down", "--purge", "--state-dir", str(state), env=env)
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stderr
