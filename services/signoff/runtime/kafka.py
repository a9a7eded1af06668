"""Kafka clients built from settings (in a service's lifespan, never at import time)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from signoff.runtime.settings import Settings

log = structlog.get_logger(__name__)

# Large enough for a dead-lettered record that carries a refused value of up to the decoder's limit and more.
MAX_REQUEST_BYTES = 2 * 1024 * 1024


def connection_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap, security protocol, SASL and TLS options shared by producers, consumers and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return options


class KeyHashPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2 of the key, so every producer puts a key on the
    same partition), remembering the hash of recent keys: the hash is pure Python, and the records of one gate
    (its event and the CDEvent mirroring it, its later outcome) share their key."""

    def __init__(self, remembered: int = 4096) -> None:
        self.remembered = remembered
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.remembered:
                self._hashes.clear()  # recent keys matter, not a true LRU
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """acks=all; idempotence as configured (on for real Kafka, off for the embedded Tansu, which refuses it)."""
    return AIOKafkaProducer(
        **connection_options(settings),
        client_id=client_id,
        partitioner=KeyHashPartitioner(),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
    )


def make_consumer(settings: Settings, topics: Iterable[str], group_id: str, client_id: str) -> AIOKafkaConsumer:
    """A group member that never auto-commits: offsets are committed after the database commit.

    auto_offset_reset is "earliest" because a new group must not skip what was published before it joined (and
    Tansu's end offsets are unreliable after batched produces)."""
    return AIOKafkaConsumer(
        *topics,
        **connection_options(settings),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        # One id serves every loop of a role: each consumes as a group of its own.
        group_instance_id=settings.kafka_group_instance_id,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        fetch_max_bytes=8 * MAX_REQUEST_BYTES,
    )


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Create missing topics (when SIGNOFF_KAFKA_CREATE_TOPICS; on Kubernetes Strimzi owns them)."""
    if not settings.kafka_create_topics:
        return
    admin = AIOKafkaAdminClient(**connection_options(settings), client_id="signoff-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if not missing:
            return
        # Another replica may win the race to create a topic; that is the outcome we wanted.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_topic_replication,
                    )
                    for name in missing
                ]
            )
        log.info("topics_created", topics=missing)
    finally:
        await admin.close()
