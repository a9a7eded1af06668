"""POST /api/v1/executions (and `signoff run`, its client) refuses a pipeline whose approval step the approval
service would refuse when its gate opens (an unknown user group, a quorum beyond the eligible people), against the
directory the approval role loaded, before anything runs: a 422 naming the step's path, nothing published. The
approval and api roles run on the real broker and PostgreSQL (the front door); the api publishes to the real
execution requests topic, read here up to its end offsets to tell what was published."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from signoff import contracts as wire
from signoff.approval.repository import ApprovalRepository
from signoff.contracts.topics import EXECUTION_REQUESTS
from tests.integration.api.conftest import FrontDoor, pipeline_name
from tests.support.waiting import eventually
from tests.unit.executor.builders import approval, as_yaml, pipeline, shell, stage

pytestmark = pytest.mark.integration

GATE = "pipeline.stages[1].stage.spec.execution.steps[0].step"


def document(identifier: str, approvers: dict) -> dict:
    body = pipeline(stage("deploy", shell("ship")), stage("release", approval("approve", approvers=approvers)))
    body["pipeline"]["identifier"] = identifier
    return body


async def requested_pipelines(bootstrap: str) -> list[str]:
    """The pipeline ids of every ExecutionRequested on the requests topic so far (up to its end offsets now)."""
    return [request.pipeline_id for request in await requested(bootstrap)]


async def requested(bootstrap: str) -> list[wire.ExecutionRequested]:
    """Every ExecutionRequested on the requests topic so far (up to its end offsets now)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[wire.ExecutionRequested] = []
        while [partition for partition, end in ends.items() if await consumer.position(partition) < end]:
            for batch in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                for record in batch:
                    event = wire.decode(record.value, record.headers)
                    if isinstance(event.data, wire.ExecutionRequested):
                        found.append(event.data)
    finally:
        await consumer.stop()
    return found


async def _partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    ids = await eventually(
        lambda: _partition_ids(consumer), timeout=30, what=f"the partitions of {EXECUTION_REQUESTS.name}"
    )
    return [TopicPartition(EXECUTION_REQUESTS.name, partition) for partition in sorted(ids)]


async def _partition_ids(consumer: AIOKafkaConsumer) -> set[int]:
    await consumer.topics()  # fetches the cluster's metadata: the topic's partitions
    return consumer.partitions_for_topic(EXECUTION_REQUESTS.name) or set()


async def directory_loaded(door: FrontDoor) -> None:
    async def loaded() -> bool:
        async with door.pool.acquire() as conn:
            return await ApprovalRepository().has_directory(conn)

    await eventually(loaded, timeout=30, what="the approval role's directory")


async def test_an_approval_step_nobody_could_approve_is_refused_before_anything_runs(front_door: FrontDoor) -> None:
    await directory_loaded(front_door)
    typo, quorum, valid, expression = (pipeline_name() for _ in range(4))
    async with await front_door.client("alice") as alice:
        unknown = await alice.post(
            "/executions", json={"pipeline_yaml": as_yaml(document(typo, {"userGroups": ["sre-typo", "docs"]}))}
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.headers["content-type"].startswith("application/problem+json")
        message = f"invalid pipeline: {GATE}.spec.approvers.userGroups: unknown user group 'sre-typo'"
        body = unknown.json()
        assert body["code"] == "invalid_pipeline" and body["detail"] == message
        assert body["errors"] == [{"field": "pipeline_yaml", "message": message}]

        # sre has alice, bob and carol; alice starts it and may not approve: two are eligible.
        too_many = {"userGroups": ["sre"], "minimumCount": 3, "disallowPipelineExecutor": True}
        refused = await alice.post("/executions", json={"pipeline_yaml": as_yaml(document(quorum, too_many))})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [
            {
                "field": "pipeline_yaml",
                "message": f"invalid pipeline: {GATE}.spec.approvers.minimumCount: 3 approvals needed but only 2 "
                "eligible people "
                "(the pipeline executor may not approve)",
            }
        ]

        enough = {"userGroups": ["sre"], "minimumCount": 3}  # alice may approve her own run here
        started = await alice.post("/executions", json={"pipeline_yaml": as_yaml(document(valid, enough))})
        assert started.status_code == 201, started.text
        assert started.json()["pipeline"] == valid and started.json()["triggered_by"] == "alice"

        # Who the expression names is known only while the pipeline runs: the approval service judges it then.
        named = {"userGroups": ["<+pipeline.variables.team>"], "minimumCount": 5}
        variable = document(expression, named)
        variable["pipeline"]["variables"] = [{"name": "team", "type": "String", "value": "sre-typo"}]
        later = await alice.post("/executions", json={"pipeline_yaml": as_yaml(variable)})
        assert later.status_code == 201, later.text

    requested = await requested_pipelines(front_door.api.settings.kafka_bootstrap)
    assert valid in requested and expression in requested
    assert typo not in requested and quorum not in requested


async def test_signoff_run_says_which_step_cannot_be_approved(front_door: FrontDoor, tmp_path: Path) -> None:
    await directory_loaded(front_door)
    path = tmp_path / "typo.yaml"
    path.write_text(as_yaml(document(pipeline_name(), {"userGroups": ["sre-typo"], "minimumCount": 1})))
    result = await front_door.cli("alice", "run", str(path))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.output
    # As the local check says its problems: the file, then the path.
    assert lines[0] == (
        f"error: {path}: invalid pipeline: {GATE}.spec.approvers.userGroups: unknown user group 'sre-typo'; "
        f"{GATE}.spec.approvers.minimumCount: 1 approvals needed but only 0 eligible people"
    )


async def test_without_a_directory_the_approval_service_is_left_to_refuse(front_door: FrontDoor) -> None:
    """A fresh install (no directory loaded yet): the directory may be loaded before the gate opens, and the approval
    service refuses the request then if it still cannot be served."""
    await directory_loaded(front_door)
    async with front_door.pool.acquire() as conn:
        await ApprovalRepository().replace_directory(conn, [])
    identifier = pipeline_name()
    async with await front_door.client("alice") as alice:
        started = await alice.post(
            "/executions", json={"pipeline_yaml": as_yaml(document(identifier, {"userGroups": ["sre-typo"]}))}
        )
    assert started.status_code == 201, started.text
    assert started.json()["pipeline"] == identifier


async def test_a_run_names_its_triggerer_with_the_directorys_e_mail(front_door: FrontDoor) -> None:
    """<+pipeline.triggeredBy.email>: the api puts the directory's e-mail of the authenticated user in the request
    (alice has one; carol is listed without); nothing the client sends names it."""
    await directory_loaded(front_door)
    started: dict[str, str] = {}
    for user in ("alice", "carol"):
        identifier = pipeline_name()
        async with await front_door.client(user) as client:
            answer = await client.post(
                "/executions",
                json={"pipeline_yaml": as_yaml(document(identifier, {"userGroups": ["docs"]}))},
            )
        assert answer.status_code == 201, answer.text
        started[user] = identifier

    async def published() -> dict[str, wire.Person] | None:
        found = {r.pipeline_id: r.triggered_by for r in await requested(front_door.api.settings.kafka_bootstrap)}
        return found if set(started.values()) <= set(found) else None

    triggerers = await eventually(published, timeout=30, what="both execution requests published")
    assert triggerers[started["alice"]] == wire.Person(user="alice", email="alice@example.com")
    assert triggerers[started["carol"]] == wire.Person(user="carol")
