"""`signoff dead-letters` reads what a real role dead-lettered from the dead-letter topic, configured only by
SIGNOFF_KAFKA_*: without a consumer group, never printing the original value unless asked."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from click.testing import CliRunner

from signoff import contracts as wire
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.contracts.topics import DEAD_LETTER_TOPIC, DLQ_HEADER_CONSUMER, DLQ_HEADER_REASON
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.service import Service
from tests.integration.approval.conftest import request
from tests.support.topics import read_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

CE = ("content-type", b"application/cloudevents+json")
SECRET = "alice-private-phone-555-0100"  # stands for personal data in a refused value


async def run(settings, tmp_path, *args: str, **env: str):
    environment = {
        "SIGNOFF_HOME": str(tmp_path / "home"),  # never a developer's running dev stack
        "SIGNOFF_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        # As `signoff dev env` says for the embedded broker (it refuses idempotent producers).
        "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence).lower(),
        **env,
    }
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=environment, catch_exceptions=False)


async def dead_letter_two_records(settings, names):
    """A running approval role consuming a topic of this test: one record that is not JSON, one CloudEvent of a
    type nobody knows; returns (topic, consumer group, the malformed record's metadata, the unknown one's, its id)
    once both dead letters are published."""
    topic = names.topic("signoff.test.approval.in")
    group = names.group("signoff-approval")
    role_settings = ApprovalSettings(**{**settings.model_dump(), "decision_keys": {"cli": "k"}})
    spec = dataclasses.replace(approval_spec(role_settings), consumes=(topic,), lanes=(), group_id=group)
    await ensure_topics(settings.model_copy(update={"kafka_topic_partitions": 1}), [topic])

    unknown = json.loads(wire.encode(wire.new_event(request(), source="urn:test"))[0])
    unknown["type"] = "io.example.nobody_knows.v1"

    service = Service(spec, role_settings)
    producer = make_producer(settings, "test-producer")
    await producer.start()
    await service.start()
    try:
        malformed = await producer.send_and_wait(topic, f"{{not json {SECRET}".encode(), key=b"k-bad", headers=[CE])
        unknown_meta = await producer.send_and_wait(topic, json.dumps(unknown).encode(), key=b"k-odd", headers=[CE])

        async def published() -> bool:
            async with service.pool.acquire() as conn:
                sent = await conn.fetchval(
                    f'SELECT count(*) FROM "{spec.schema}".outbox '  # noqa: S608
                    "WHERE type = 'dead-letter' AND sent_at IS NOT NULL"
                )
            return sent >= 2

        await eventually(published, what="both records dead-lettered and published")
    finally:
        await service.stop()
        await producer.stop()
    return topic, group, malformed, unknown_meta, unknown["id"]


async def test_dead_letters_lists_what_a_role_dead_lettered(settings, names, tmp_path) -> None:
    topic, group, malformed, unknown, unknown_id = await dead_letter_two_records(settings, names)

    # The real dead-letter topic (other tests' roles write to it too): this test's consumer only.
    result = await run(settings, tmp_path, "dead-letters", "--consumer", group)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    bad = next(line for line in lines if f"{topic}[{malformed.partition}]@{malformed.offset}" in line)
    assert "  malformed_json  " in bad and f"  {group}  " in bad and "is not valid UTF-8 JSON" in bad
    odd = next(line for line in lines if f"{topic}[{unknown.partition}]@{unknown.offset}" in line)
    assert "  unknown_type  " in odd and f"event {unknown_id} (io.example.nobody_knows.v1)" in odd
    assert lines[-1] == "2 dead letters: 1 malformed_json, 1 unknown_type"
    assert SECRET not in result.stdout  # the original value is never shown unless asked

    result = await run(settings, tmp_path, "dead-letters", "--consumer", group, "--reason", "malformed_json", "--json")
    assert result.exit_code == 0, result.output
    (letter,) = json.loads(result.stdout)
    assert letter["reason"] == "malformed_json" and letter["consumer"] == group
    assert (letter["original_topic"], letter["original_partition"], letter["original_offset"]) == (
        topic,
        malformed.partition,
        malformed.offset,
    )
    assert letter["key"] == "k-bad" and letter["event_id"] is None and letter["failed_at"]
    headers = letter["headers"]
    assert [DLQ_HEADER_CONSUMER, group] in headers and [DLQ_HEADER_REASON, "malformed_json"] in headers
    assert "value" not in letter and SECRET not in result.stdout

    result = await run(settings, tmp_path, "dead-letters", "--consumer", group, "--show-value", "--limit", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith("    value: ")
    assert lines[-1] == "2 dead letters (the newest 1 shown): 1 malformed_json, 1 unknown_type"

    result = await run(settings, tmp_path, "dead-letters", "--consumer", group, "--reason", "too_large")
    assert (result.exit_code, result.stdout) == (0, "no dead letters\n")


async def test_replay_publishes_a_chosen_dead_letter_again_to_its_topic(settings, names, tmp_path) -> None:
    """Once what refused it is fixed: the original key, value and headers go back to the topic it came from, the
    `signoff-dlq-*` headers dropped, `signoff-replayed-from` added; a dry run publishes nothing."""
    topic, group, _malformed, unknown, _unknown_id = await dead_letter_two_records(settings, names)
    listed = await run(settings, tmp_path, "dead-letters", "--consumer", group, "--reason", "unknown_type", "--json")
    (letter,) = json.loads(listed.stdout)
    at = f"{letter['partition']}:{letter['offset']}"
    where = f"{DEAD_LETTER_TOPIC}[{letter['partition']}]@{letter['offset']}"
    (original,) = [r for r in await read_records(settings.kafka_bootstrap, topic, 2) if r.offset == unknown.offset]

    dry = await run(settings, tmp_path, "dead-letters", "replay", "--consumer", group, "--at", at, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(f"would replay {where} to {topic}: ") and "  unknown_type  " in dry.stdout
    assert dry.stdout.splitlines()[-1] == "1 dead letter would be replayed"

    done = await run(settings, tmp_path, "dead-letters", "replay", "--consumer", group, "--at", at)
    assert (done.exit_code, done.stdout) == (0, f"replayed {where} to {topic}\n1 dead letter replayed\n"), done.output
    records = await read_records(settings.kafka_bootstrap, topic, 3)
    assert len(records) == 3  # the dry run published nothing
    replayed = records[-1]
    assert (replayed.key, replayed.value) == (original.key, original.value)
    assert list(replayed.headers) == [*original.headers, ("signoff-replayed-from", where.encode())]

    missing = await run(settings, tmp_path, "dead-letters", "replay", "--consumer", group, "--at", "0:999999")
    assert (missing.exit_code, missing.stderr) == (1, "error: no dead letter at 0:999999 (with the filters given); "
                                                     "nothing replayed\n")  # fmt: skip
    for bad in ([], ["--at", "zero:1"], ["--at", "0"]):
        result = await run(settings, tmp_path, "dead-letters", "replay", *bad)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (bad, result.output)


async def test_an_empty_topic_has_no_dead_letters(settings, names, tmp_path) -> None:
    topic = names.topic(DEAD_LETTER_TOPIC)
    await ensure_topics(settings, [topic])
    result = await run(settings, tmp_path, "dead-letters", "--topic", topic)
    assert (result.exit_code, result.stdout) == (0, "no dead letters\n")
    result = await run(settings, tmp_path, "dead-letters", "--topic", topic, "--json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


async def test_an_unreachable_broker_is_one_line_and_bad_options_are_usage_errors(settings, tmp_path) -> None:
    result = await run(settings, tmp_path, "dead-letters", SIGNOFF_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert (result.exit_code, result.stderr) == (1, "error: cannot reach the broker at 127.0.0.1:1\n")
    assert result.stdout == ""
    for bad in (["--limit", "0"], ["--limit", "many"], ["--no-such-option"]):
        result = await run(settings, tmp_path, "dead-letters", *bad)
        assert result.exit_code == 2, (bad, result.output)
