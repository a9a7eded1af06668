"""Every role (approval, executor, notifier) as a Service on the real broker and PostgreSQL: records that text and
jsonb cannot hold (a NUL in the key, in a header name, in the event id or the data) are dead-lettered as they came
and the role keeps consuming; none of them stops it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from signoff import contracts as wire
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.contracts.topics import DLQ_HEADER_ORIGINAL_TOPIC
from signoff.executor.service import executor_spec
from signoff.executor.settings import ExecutorSettings
from signoff.notifier.service import notifier_spec
from signoff.notifier.settings import NotifierSettings
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.outbox import headers_from_json
from signoff.runtime.service import Service
from tests.integration.approval.conftest import request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

CE = ("content-type", b"application/cloudevents+json")


def _spec(role: str, settings, topic: str, group: str):
    if role == "approval":
        role_settings = ApprovalSettings(**{**settings.model_dump(), "decision_keys": {"cli": "k"}})
        spec = approval_spec(role_settings)
    elif role == "executor":
        role_settings = ExecutorSettings(**settings.model_dump())
        spec = executor_spec(role_settings)
    else:
        role_settings = NotifierSettings(**settings.model_dump())
        spec = notifier_spec(role_settings)
    return dataclasses.replace(spec, consumes=(topic,), lanes=(), group_id=group), role_settings


@pytest.mark.parametrize("role", ["approval", "executor", "notifier"])
async def test_records_with_nul_bytes_never_stop_a_role(role, settings, names):
    topic = names.topic(f"signoff.test.{role}.in")
    spec, role_settings = _spec(role, settings, topic, names.group(role))
    await ensure_topics(settings.model_copy(update={"kafka_topic_partitions": 1}), [topic])

    nul_in_envelope = json.loads(wire.encode(wire.new_event(request(), source="urn:test"))[0])
    nul_in_envelope["id"] = "id-with-\u0000-nul"
    nul_in_envelope["data"]["pipeline_name"] = "pay\u0000ments"
    records = [
        (b"{not json", [CE], b"gate\x00key"),
        (b"{not json", [CE, ("x-trace\x00id", b"v")], b"k"),
        (json.dumps(nul_in_envelope).encode(), [CE], b"k2"),
        (b"{the last one", [CE], b"last"),
    ]

    service = Service(spec, role_settings)
    producer = make_producer(settings, "test-producer")
    await producer.start()
    await service.start()
    try:
        for value, headers, key in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)

        async def dead_letter_keys():
            async with service.pool.acquire() as conn:
                rows = await conn.fetch(
                    f'SELECT key, headers FROM "{spec.schema}".outbox WHERE type = $1 ORDER BY seq',  # noqa: S608
                    "dead-letter",
                )
            mine = [r for r in rows if (DLQ_HEADER_ORIGINAL_TOPIC, topic.encode()) in headers_from_json(r["headers"])]
            return [bytes(r["key"]) for r in mine] if len(mine) >= len(records) else None

        keys = await eventually(dead_letter_keys, what="every record dead-lettered")
        assert sorted(keys) == sorted(key for _, _, key in records)
        consumer = next(t for t in service._tasks if t.get_name() == "consumer")
        assert not consumer.done()
    finally:
        await service.stop()
        await producer.stop()
