"""Kafka on Kubernetes: the Strimzi topics and users, their ACLs, and KEDA's lag triggers agree with each other
and with how the services connect."""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest

from tests.deploy.manifests import Manifest, by_kind, container_env, mounted_files, one, pod_spec

TOPICS = {
    "signoff.approval.requests.v1",
    "signoff.approval.decisions.v1",
    "signoff.approval.gates.v1",
    "signoff.execution.requests.v1",
    "signoff.execution.events.v1",
    "signoff.cdevents.v1",
    "signoff.deadletter.v1",
}
# topic -> the KafkaUsers allowed to write it. Only the approval service writes gate events (and their CDEvents);
# only decision sources (the api, outside ones) write decisions; the executor writes approval requests and execution
# events; every service that consumes with a group dead-letters (the api, reading every partition in every replica,
# does not).
WRITERS = {
    "signoff.approval.requests.v1": {"signoff-executor", "signoff-pipeline-client"},
    "signoff.approval.decisions.v1": {"signoff-api", "signoff-decision-source"},
    "signoff.approval.gates.v1": {"signoff-approval"},
    "signoff.execution.requests.v1": {"signoff-api", "signoff-pipeline-client"},
    "signoff.execution.events.v1": {"signoff-executor"},
    "signoff.cdevents.v1": {"signoff-approval"},
    "signoff.deadletter.v1": {"signoff-approval", "signoff-executor", "signoff-notifier"},
}
# user -> {topic: consumer group (a literal name, or a prefix ending in *), or None: no group, partitions assigned}.
READERS: dict[str, dict[str, str | None]] = {
    "signoff-approval": {
        "signoff.approval.requests.v1": "signoff-approval",
        "signoff.approval.decisions.v1": "signoff-approval",
    },
    "signoff-executor": {
        "signoff.execution.requests.v1": "signoff-executor",
        "signoff.approval.gates.v1": "signoff-executor",
    },
    "signoff-notifier": {"signoff.approval.gates.v1": "signoff-notifier"},
    "signoff-decision-source": {"signoff.approval.gates.v1": "signoff-decision-source*"},
    "signoff-pipeline-client": {"signoff.approval.gates.v1": "signoff-pipeline-client*"},
    "signoff-cdevents-consumer": {"signoff.cdevents.v1": "signoff-cdevents-consumer*"},
    # Every replica reads every partition, committing nothing: any of them may hold the request waiting on an event.
    "signoff-api": {"signoff.approval.gates.v1": None},
}
SERVICES = ("approval", "executor", "notifier", "api")
LAG_SCALED = ("approval", "executor", "notifier")  # the api scales on CPU: tests/deploy/test_api.py
KEDA_SASL = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}


def topics(objects: list[Manifest]) -> dict[str, Manifest]:
    return {t["spec"].get("topicName", name): t for name, t in by_kind(objects, "KafkaTopic").items()}


def acl_grants(user: Manifest) -> tuple[dict[str, set[str]], set[str]]:
    """(topic -> operations, consumer groups) a KafkaUser's ACLs allow; a prefix group is written `name*`."""
    topic_ops: dict[str, set[str]] = defaultdict(set)
    groups = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow", "deny rules are not used"
        resource, ops = acl["resource"], set(acl["operations"])
        prefix = resource.get("patternType", "literal") == "prefix"
        if resource["type"] == "topic":
            assert not prefix and "*" not in resource["name"], f"{resource}: topic ACLs name one topic"
            topic_ops[resource["name"]] |= ops
        elif resource["type"] == "group":
            assert ops == {"Read"}, f"{resource}: a consumer group needs Read only"
            groups.add(resource["name"] + ("*" if prefix else ""))
        else:
            raise AssertionError(f"{user['metadata']['name']}: unexpected ACL on {resource}")
    return topic_ops, groups


def acl_matrix(objects: list[Manifest]) -> tuple[dict[str, set[str]], dict[str, dict[str, str | None]]]:
    """(topic -> writers, user -> {topic read: group, None without one}) from the KafkaUsers."""
    writers: dict[str, set[str]] = defaultdict(set)
    readers: dict[str, dict[str, str | None]] = {}
    for name, user in by_kind(objects, "KafkaUser").items():
        topic_ops, groups = acl_grants(user)
        assert len(groups) <= 1, f"{name}: one consumer group (or prefix) per user"
        for topic, ops in topic_ops.items():
            assert ops <= {"Read", "Write", "Describe"}, f"{name} on {topic}: {ops}"
            if "Write" in ops:
                writers[topic].add(name)
            if "Read" in ops:
                readers.setdefault(name, {})[topic] = next(iter(groups), None)
    return dict(writers), readers


def test_every_topic_is_a_kafka_topic(objects: list[Manifest]) -> None:
    assert set(topics(objects)) == TOPICS
    for name, topic in topics(objects).items():
        spec = topic["spec"]
        assert spec["partitions"] >= 1 and "retention.ms" in spec["config"], name
        assert spec["config"]["min.insync.replicas"] <= spec["replicas"], name
        if spec["replicas"] > 1:  # with replication, one broker down must not stop the producers (acks=all)
            assert spec["config"]["min.insync.replicas"] < spec["replicas"], name


def test_the_contract_topics_are_the_kafka_topics(objects: list[Manifest]) -> None:
    """signoff.contracts.topics is the source of truth for topic names: each has a KafkaTopic, and no other."""
    from signoff.contracts.topics import TOPICS as CONTRACT_TOPICS

    assert {topic.name for topic in CONTRACT_TOPICS} == set(topics(objects)) == TOPICS


def test_acl_matrix(objects: list[Manifest]) -> None:
    writers, readers = acl_matrix(objects)
    assert writers == WRITERS
    assert readers == READERS


def test_acl_matrix_catches_a_second_writer_of_gate_events(rendered: dict[str, list[Manifest]]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    executor = by_kind(objects, "KafkaUser")["signoff-executor"]
    executor["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": "signoff.approval.gates.v1"}, "operations": ["Write"]}
    )
    writers, _ = acl_matrix(objects)
    assert (
        writers["signoff.approval.gates.v1"]
        == {"signoff-approval", "signoff-executor"}
        != WRITERS["signoff.approval.gates.v1"]
    )


@pytest.mark.parametrize(
    ("what", "acl"),
    [
        ("a consumer group", {"resource": {"type": "group", "name": "signoff-api", "patternType": "prefix"}}),
        ("dead letters", {"resource": {"type": "topic", "name": "signoff.deadletter.v1"}}),
        ("gate events", {"resource": {"type": "topic", "name": "signoff.approval.gates.v1"}}),
    ],
)
def test_acl_matrix_catches_an_api_with_more_rights(rendered: dict[str, list[Manifest]], what: str, acl) -> None:
    objects = copy.deepcopy(rendered["prod"])
    operations = ["Read"] if acl["resource"]["type"] == "group" else ["Write"]
    acls = by_kind(objects, "KafkaUser")["signoff-api"]["spec"]["authorization"]["acls"]
    acls.append(acl | {"operations": operations})
    assert acl_matrix(objects) != (WRITERS, READERS)


def test_acls_name_existing_topics(objects: list[Manifest]) -> None:
    for name, user in by_kind(objects, "KafkaUser").items():
        topic_ops, _ = acl_grants(user)
        assert set(topic_ops) <= set(topics(objects)), name


def _cluster(objects: list[Manifest]) -> str:
    clusters = {o["metadata"]["labels"].get("strimzi.io/cluster") for o in objects if o["kind"].startswith("Kafka")}
    assert len(clusters) == 1 and None not in clusters, f"KafkaTopics and KafkaUsers name clusters {clusters}"
    return clusters.pop()


@pytest.mark.parametrize("service", SERVICES)
def test_service_connects_as_its_kafka_user(objects: list[Manifest], service: str) -> None:
    """User name, password Secret, CA Secret, bootstrap address and broker egress all point at the same cluster."""
    cluster = _cluster(objects)
    deployment = one(objects, "Deployment", f"signoff-{service}")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    env = container_env(objects, container)
    user = env["SIGNOFF_KAFKA_SASL_USERNAME"]
    assert user == f"signoff-{service}" and user in by_kind(objects, "KafkaUser")
    assert one(objects, "KafkaUser", user)["spec"]["authentication"]["type"] == "scram-sha-512"
    assert env["SIGNOFF_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"

    files = mounted_files(spec, container, env["SIGNOFF_SECRETS_DIR"])
    assert files["signoff_kafka_sasl_password"] == ("secret", user, "password")  # the User Operator's Secret
    ca_file = env["SIGNOFF_KAFKA_SSL_CAFILE"].rsplit("/", 1)[1]
    assert files[ca_file] == ("secret", f"{cluster}-cluster-ca-cert", "ca.crt")  # the Cluster Operator's CA

    host, port = env["SIGNOFF_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    assert host.split(".")[0] == f"{cluster}-kafka-bootstrap"
    assert env["SIGNOFF_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and port == "9093"  # Strimzi's TLS listener
    egress = one(objects, "NetworkPolicy", f"signoff-{service}")["spec"]["egress"]
    broker_rules = [r for r in egress if any("podSelector" in peer for peer in r.get("to", []))]
    assert [r["to"][0]["podSelector"]["matchLabels"] for r in broker_rules] == [
        {"strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka"}
    ]
    assert broker_rules[0]["ports"] == [{"port": int(port), "protocol": "TCP"}]


@pytest.mark.parametrize("service", LAG_SCALED)
def test_scaled_object_watches_the_service_consumer_group(objects: list[Manifest], service: str) -> None:
    name = f"signoff-{service}"
    scaled = one(objects, "ScaledObject", name)["spec"]
    deployment = one(objects, "Deployment", name)
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", name)
    (container,) = pod_spec(deployment)["containers"]
    assert target["envSourceContainerName"] == container["name"]
    env = container_env(objects, container)

    # Below the Deployment's replicas, every `kubectl apply` would fight the autoscaler.
    assert scaled["minReplicaCount"] == deployment["spec"]["replicas"] <= scaled["maxReplicaCount"]

    _, readers = acl_matrix(objects)
    inputs = readers[name]
    assert {t["metadata"]["topic"] for t in scaled["triggers"]} == set(inputs), "one trigger per input topic"
    partitions = {topic: t["spec"]["partitions"] for topic, t in topics(objects).items()}
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == inputs[meta["topic"]] == name
        # Past the partition count, extra consumers of the group sit idle.
        assert scaled["maxReplicaCount"] <= partitions[meta["topic"]]
        assert meta["bootstrapServersFromEnv"] in env and env[meta["bootstrapServersFromEnv"]]
        assert meta["offsetResetPolicy"] == "earliest"
        assert meta["sasl"] == KEDA_SASL[env["SIGNOFF_KAFKA_SASL_MECHANISM"]]
        assert meta["tls"] == ("enable" if env["SIGNOFF_KAFKA_SECURITY_PROTOCOL"].endswith("SSL") else "disable")
        int(meta["lagThreshold"])

        auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
        assert auth["env"] == [
            {"parameter": "username", "name": "SIGNOFF_KAFKA_SASL_USERNAME", "containerName": container["name"]}
        ]
        files = mounted_files(pod_spec(deployment), container, env["SIGNOFF_SECRETS_DIR"])
        secret_refs = {r["parameter"]: ("secret", r["name"], r["key"]) for r in auth["secretTargetRef"]}
        assert secret_refs == {
            "password": files["signoff_kafka_sasl_password"],
            "ca": files[env["SIGNOFF_KAFKA_SSL_CAFILE"].rsplit("/", 1)[1]],
        }
