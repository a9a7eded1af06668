"""Where the tests' broker and PostgreSQL come from.

SIGNOFF_TEST_INFRA chooses: `external` (SIGNOFF_TEST_KAFKA_BOOTSTRAP + SIGNOFF_TEST_DATABASE_URL, e.g. a CI service
or a staging cluster), `testcontainers` (real Apache Kafka and PostgreSQL images; needs a Docker engine), `embedded`
(Tansu + PostgreSQL from pip wheels), or `auto` (the default: external when those variables are set, else
testcontainers when a Docker engine answers, else embedded).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KAFKA_IMAGE = "apache/kafka:4.1.0"
POSTGRES_IMAGE = "postgres:18.1-bookworm"


@dataclass(frozen=True)
class Infra:
    """Connection facts for one test session."""

    mode: str
    kafka_bootstrap: str
    admin_dsn: str  # a superuser DSN on the maintenance database
    enable_idempotence: bool
    session_timeout_ms: int

    def dsn(self, database: str) -> str:
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{database}"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


def choose_mode() -> str:
    mode = os.environ.get("SIGNOFF_TEST_INFRA", "auto")
    if mode != "auto":
        return mode
    if os.environ.get("SIGNOFF_TEST_KAFKA_BOOTSTRAP") and os.environ.get("SIGNOFF_TEST_DATABASE_URL"):
        return "external"
    return "testcontainers" if _docker_answers() else "embedded"


@contextlib.contextmanager
def provide_infra() -> Iterator[Infra]:
    mode = choose_mode()
    if mode == "external":
        yield Infra(
            mode,
            os.environ["SIGNOFF_TEST_KAFKA_BOOTSTRAP"],
            os.environ["SIGNOFF_TEST_DATABASE_URL"],
            enable_idempotence=os.environ.get("SIGNOFF_TEST_KAFKA_IDEMPOTENCE", "true") == "true",
            session_timeout_ms=6000,
        )
    elif mode == "testcontainers":
        with _containers() as infra:
            yield infra
    elif mode == "embedded":
        with _embedded() as infra:
            yield infra
    else:
        raise ValueError(f"SIGNOFF_TEST_INFRA={mode!r}: choose auto, external, testcontainers or embedded")


@contextlib.contextmanager
def _embedded() -> Iterator[Infra]:
    from signoff.devstack import DevStack

    # A private (0700) folder, as a clone under /root would be: as root, the stack keeps the server's files
    # where its unprivileged account can reach them, and remove() deletes them there too.
    stack = DevStack(Path(tempfile.mkdtemp(prefix="signoff-test-")), fast=True)
    try:
        with stack:
            yield Infra(
                "embedded",
                stack.broker.bootstrap,
                stack.postgres.dsn("postgres"),
                enable_idempotence=False,  # Tansu refuses idempotent producers
                session_timeout_ms=2000,  # a group join waits about half of it on this broker
            )
    finally:
        stack.remove()


@contextlib.contextmanager
def _containers() -> Iterator[Infra]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.postgres import PostgresContainer

    from signoff.devstack.broker import broker_answers
    from signoff.devstack.process import free_port

    port = free_port()
    # Apache Kafka in KRaft mode; the advertised port must be the host port, so it is chosen before start.
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    postgres = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres")
    with postgres as pg, kafka:
        bootstrap = f"127.0.0.1:{port}"
        from signoff.devstack.process import wait_for

        wait_for(lambda: broker_answers(bootstrap), timeout=120, what="Kafka container")
        host, pg_port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        yield Infra(
            "testcontainers",
            bootstrap,
            f"postgresql://postgres:postgres@{host}:{pg_port}/postgres",
            enable_idempotence=True,
            session_timeout_ms=6000,
        )
