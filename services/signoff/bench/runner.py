"""Runs the whole benchmark: infrastructure (embedded by default), roles as processes, measurements, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from signoff.api.identity import issue_token
from signoff.api.repository import ApiRepository
from signoff.approval.repository import ApprovalRepository
from signoff.bench import database, scenarios, workload
from signoff.bench.cpu import CpuMeter, own_cpu_seconds, tree_cpu_seconds
from signoff.bench.report import Report, Row, megabytes, millis, plan_lines, rate
from signoff.bench.roles import BenchError, RoleProcess, role_env
from signoff.bench.sink import Sink
from signoff.cli.roles import ROLES
from signoff.contracts.topics import APPROVAL_DECISIONS, APPROVAL_GATES, APPROVAL_REQUESTS
from signoff.devstack.errors import DevStackError
from signoff.devstack.process import free_port
from signoff.devstack.stack import DevStack
from signoff.kernel import user_key
from signoff.runtime.db import create_pool
from signoff.runtime.kafka import ensure_topics, make_producer
from signoff.runtime.settings import Settings, load_settings

REQUESTS = APPROVAL_REQUESTS.name
DECISIONS = APPROVAL_DECISIONS.name
GATES = APPROVAL_GATES.name
CATALOG = Path(__file__).resolve().parents[3] / "examples" / "catalog.yaml"
WEBHOOK_CONCURRENCY = 8  # the notifier's default SIGNOFF_CHANNEL_CONCURRENCY
OBSERVE_SECONDS = 10.0
API_RATE = 50.0  # decisions per second through the api (P5)
LIST_SAMPLES = 200  # GET /api/v1/gates?mine=true requests per measurement (P6)


@dataclass(frozen=True)
class BenchOptions:
    requests: int = 50_000
    naive_requests: int = 2_000
    rate: float = 200.0
    seconds: float = 10.0
    pending: int = 1_000_000
    notifications: int = 5_000
    bootstrap: str | None = None
    database_url: str | None = None
    burst: int = 20_000
    only: frozenset[str] | None = None
    """The rows to measure (`--only`), None for all of them; rows measure what their baselines need."""

    def wants(self, *rows: str) -> bool:
        """Whether any of `rows` is measured in this run."""
        return self.only is None or any(row in self.only for row in rows)

    def seed_requests(self) -> int:
        """Without P1, the gates the selected rows need are opened first (not timed): each decision load decides
        rate x seconds of them, P5 its own, P3 one per delivery, P4 copies one as the template of its fillers."""
        loads = sum(1 for rows in (("P2", "P4", "P5"), ("P2b",), ("P4",)) if self.wants(*rows))
        needed = int(self.rate * self.seconds) * loads + 1
        if self.wants("P5"):
            needed += int(API_RATE * self.seconds)
        if self.wants("P3"):
            needed = max(needed, self.notifications)
        return needed


ROW_IDS = ("P1", "P2", "P2b", "P3", "P4", "P5", "P6")


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    memory = next((line.split()[1] for line in _lines("/proc/meminfo") if line.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} CPUs ({cpu}), {int(memory) / 2**20:.0f} GiB, {platform.system()} {platform.release()}"


def _lines(path: str) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(path).read_text().splitlines()
    return []


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def run(options: BenchOptions, command: str, say: Callable[[str], None]) -> Report:
    """Measure every target of DESIGN.md that the roles present can serve; `say` reports progress."""
    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as scratch:
        work = Path(scratch)
        # PostgreSQL runs unprivileged when we are root and must traverse to its data directory.
        os.chmod(scratch, 0o711)  # noqa: S103
        stack = None
        if options.bootstrap is None:
            say("starting the embedded broker and PostgreSQL")
            stack = DevStack(work / "stack")
            try:
                await asyncio.to_thread(stack.start)
            except DevStackError as exc:
                raise BenchError(str(exc)) from exc
            base_env = stack.env
            infrastructure = "embedded Tansu (memory storage) + PostgreSQL " + "{version}"
            # Ours to measure: the embedded servers are children of this process (an external one is not).
            assert stack.postgres.proc is not None and stack.broker.proc is not None
            servers = {"PostgreSQL": stack.postgres.proc.pid, "broker": stack.broker.proc.pid}
        else:
            base_env = {
                "SIGNOFF_KAFKA_BOOTSTRAP": options.bootstrap,
                "SIGNOFF_DATABASE_URL": options.database_url or "",
            }
            infrastructure = f"broker {options.bootstrap} + PostgreSQL " + "{version}"
            servers: dict[str, int] = {}
        try:
            return await _measure(options, command, say, work, base_env, infrastructure, servers)
        finally:
            if stack is not None:
                await asyncio.to_thread(stack.stop)


async def _measure(
    options: BenchOptions,
    command: str,
    say: Callable[[str], None],
    work: Path,
    base_env: dict[str, str],
    infrastructure: str,
    servers: dict[str, int],
) -> Report:
    """The run itself; `servers`: the processes of the embedded PostgreSQL and broker (name -> pid), whose CPU the
    report's notes include (none with external ones)."""
    run_id = uuid.uuid4().hex[:8]
    admin_dsn = base_env["SIGNOFF_DATABASE_URL"]
    db_name = f"signoff_bench_{run_id}"
    dsn = _with_database(admin_dsn, db_name)
    key = secrets.token_urlsafe(32)
    sink = Sink()
    await sink.start()
    (work / "directory.yaml").write_text(workload.directory_yaml())
    (work / "routing.yaml").write_text(workload.routing_yaml(sink.url))
    catalog = {"SIGNOFF_CATALOG_FILE": str(CATALOG)} if CATALOG.is_file() else {}
    env = role_env(
        base_env,
        SIGNOFF_DATABASE_URL=dsn,
        SIGNOFF_DECISION_KEYS=json.dumps({workload.DECISION_SOURCE: key, "api": key}),
        SIGNOFF_API_DECISION_KEY=key,
        SIGNOFF_API_HOST="127.0.0.1",
        SIGNOFF_DIRECTORY_FILE=str(work / "directory.yaml"),
        SIGNOFF_ROUTING_FILE=str(work / "routing.yaml"),
        SIGNOFF_CHANNEL_SECRET_BENCH_HOOK=secrets.token_urlsafe(32),
        SIGNOFF_LOG_FORMAT="json",
        **catalog,
    )
    settings = load_settings(
        Settings,
        **{
            name.removeprefix("SIGNOFF_").lower(): value
            for name, value in env.items()
            if name in ("SIGNOFF_KAFKA_BOOTSTRAP", "SIGNOFF_DATABASE_URL", "SIGNOFF_KAFKA_ENABLE_IDEMPOTENCE")
        },
    )
    await database.create_database(admin_dsn, db_name)
    roles: list[RoleProcess] = []
    producer = make_producer(settings, "signoff-bench")
    pool = None

    async def start(role: str, **extra: str) -> RoleProcess:
        process = RoleProcess(role, env | extra, work)
        roles.append(process)
        await process.start()
        return process

    def cpu_meter(role: RoleProcess, bench: str) -> CpuMeter:
        """The CPU of `role`, the embedded servers and this process (`bench`: what it does meanwhile)."""
        assert role.proc is not None
        readers = {f"{role.role} role": lambda pid=role.proc.pid: tree_cpu_seconds(pid)}
        readers |= {name: lambda pid=pid: tree_cpu_seconds(pid) for name, pid in servers.items()}
        return CpuMeter(readers | {bench: own_cpu_seconds}, time.monotonic)

    async def fan_out_noting_cpu(notifier: RoleProcess, what: str) -> scenarios.Throughput:
        """`notifier_fan_out`, noting where the CPU went: from now (the role's start-up left out) against the POSTs
        that arrive meanwhile (it may have sent a few before /readyz answered)."""
        meter = cpu_meter(notifier, "bench (sink)")
        meter.start()
        arrived = len(sink.arrivals)
        measured = await scenarios.notifier_fan_out(sink, options.notifications)
        report.notes.append(meter.stop(len(sink.arrivals) - arrived).note(what, "delivery"))
        return measured

    async def stop(process: RoleProcess) -> None:
        # In a thread: the sink shares this event loop and must keep answering the notifier while it drains.
        await asyncio.to_thread(process.stop)
        roles.remove(process)

    try:
        await producer.start()
        approval = await start("approval")
        pool = await create_pool(dsn)
        report = Report(
            machine=machine(),
            infrastructure=infrastructure.format(version=await database.server_version(pool)),
            command=command,
        )
        raw_topic, latency_topic = f"signoff.bench.raw.{run_id}", f"signoff.bench.latency.{run_id}"
        await ensure_topics(settings, [raw_topic, latency_topic])

        # P1: burst of requests, against the broker alone and against the naive consumer.
        pipeline = f"bench-{run_id}"
        if options.wants("P1"):
            partitions = settings.kafka_topic_partitions
            say(f"P1: {options.requests:,} requests, raw produce->consume on {partitions} partitions")
            messages = workload.requests(pipeline, options.requests)
            raw = await scenarios.raw_produce_consume(settings, producer, raw_topic, f"bench-raw-{run_id}", messages)
            say(f"P1: {options.requests:,} requests through the approval role")
            burst_cpu = cpu_meter(approval, "bench (producer)")
            burst_cpu.start()
            served = await scenarios.burst(producer, pool, REQUESTS, pipeline, messages)
            report.notes.append(burst_cpu.stop(options.requests).note("P1's burst", "request"))
            report.add(
                Row(
                    "P1",
                    f"burst of {options.requests:,} ApprovalRequested -> gates persisted + GateOpened published",
                    rate(served.rate),
                    f"raw produce->consume {rate(raw.rate)}",
                    f"{served.rate / raw.rate:.2f}",
                    ">= 0.50",
                    served.rate / raw.rate >= 0.5,
                )
            )
            await stop(approval)
            say(f"P1: {options.naive_requests:,} requests through the naive consumer (a transaction per event)")
            naive_role = await start("approval", SIGNOFF_CONSUMER_MAX_BATCH="1")
            naive = await scenarios.burst(
                producer,
                pool,
                REQUESTS,
                f"{pipeline}-naive",
                workload.requests(f"{pipeline}-naive", options.naive_requests),
            )
            await stop(naive_role)
            report.add(
                Row(
                    "P1",
                    "the same, against a naive consumer (one transaction + offset commit per message)",
                    rate(served.rate),
                    f"naive {rate(naive.rate)} ({options.naive_requests:,} requests)",
                    f"{served.rate / naive.rate:.1f}x",
                    ">= 5x",
                    served.rate / naive.rate >= 5,
                )
            )
        else:
            seed = options.seed_requests()
            say(f"opening {seed:,} gates for the rows measured (P1 not measured)")
            await scenarios.burst(producer, pool, REQUESTS, pipeline, workload.requests(pipeline, seed))

        # P2: decision -> outcome under a steady decision load, against the broker's own latency.
        if options.wants("P1"):
            approval = await start("approval")  # P1 ended with the naive consumer
        decides = options.wants("P2", "P4", "P5")  # P4 and P5 compare with P2's decisions
        if decides or options.wants("P2b"):
            say(f"P2: broker produce->consume latency at {options.rate:g}/s for {options.seconds:g}s")
            decision_size = len(workload.decision("gate", "token", key.encode())[1])
            broker = await scenarios.broker_latency(
                settings,
                producer,
                latency_topic,
                f"bench-latency-{run_id}",
                options.rate,
                options.seconds,
                decision_size,
            )
        pending_before = await database.pending_count(pool)

        async def decide(group: str) -> scenarios.Latencies:
            return await scenarios.decision_latency(
                settings,
                producer,
                pool,
                decisions_topic=DECISIONS,
                gates_topic=GATES,
                group=group,
                pipeline=pipeline,
                key=key.encode(),
                rate=options.rate,
                seconds=options.seconds,
            )

        if decides:
            say(f"P2: decisions at {options.rate:g}/s for {options.seconds:g}s ({pending_before:,} gates pending)")
            decided = await decide(f"bench-outcomes-{run_id}")
        if options.wants("P2"):
            report.add(
                Row(
                    "P2",
                    f"decision -> outcome event at {options.rate:g} decisions/s (p50 {millis(decided.p50)})",
                    f"p99 {millis(decided.p99)}",
                    f"broker produce->consume p99 {millis(broker.p99)} (p50 {millis(broker.p50)})",
                    f"{decided.p99 / broker.p99:.1f}x",
                    "<= 3x",
                    decided.p99 <= 3 * broker.p99,
                )
            )

        # P5: an approval through the api (HTTP until the verdict), against P2's event path.
        api = None
        if options.wants("P5", "P6"):
            api_port = free_port()
            api = await start("api", SIGNOFF_API_PORT=str(api_port))
            api_url = f"http://127.0.0.1:{api_port}"
            async with pool.acquire() as conn:
                _, api_token = await issue_token(
                    conn,
                    ApiRepository(),
                    user=workload.APPROVER,
                    name="bench",
                    permissions=(),
                    lifetime=timedelta(hours=6),
                    now=datetime.now(UTC),
                )
        if options.wants("P5"):
            api_count = int(API_RATE * options.seconds)
            say(f"P5: {api_count:,} approvals through the api at {API_RATE:g}/s")
            api_gates = [gate_id for gate_id, _ in await database.pending_tokens(pool, pipeline, api_count)]
            through_api = await scenarios.api_decision_latency(api_url, api_token, api_gates, API_RATE)
            report.add(
                Row(
                    "P5",
                    f"an approval through the api (POST until the 200 with the verdict) at {API_RATE:g}/s "
                    f"(p50 {millis(through_api.p50)})",
                    f"p99 {millis(through_api.p99)}",
                    f"P2 event path p99 {millis(decided.p99)}",
                    f"{through_api.p99 / decided.p99:.2f}",
                    "<= 1.5",
                    through_api.p99 <= 1.5 * decided.p99,
                )
            )
        if options.wants("P6"):
            pending_listed = await database.pending_count(pool)
            say(f"P6: GET /api/v1/gates?mine=true with {pending_listed:,} gates pending")
            listed_before = await scenarios.api_list_latency(api_url, api_token, LIST_SAMPLES)

        # P2b: the same decisions while a burst of requests is being absorbed: decisions must not queue behind it.
        if options.wants("P2b"):
            burst_pipeline = f"{pipeline}-burst"
            burst_messages = workload.requests(burst_pipeline, options.burst)  # built before the clock starts
            say(f"P2b: decisions at {options.rate:g}/s while {options.burst:,} requests are absorbed")
            # The burst from a producer of its own, as another client's would be: the decisions are not batched
            # behind 20,000 requests in the benchmark's own producer.
            burst_producer = make_producer(settings, "signoff-bench-burst")
            await burst_producer.start()
            try:
                absorbing = asyncio.create_task(
                    scenarios.burst(burst_producer, pool, REQUESTS, burst_pipeline, burst_messages)
                )
                during = await decide(f"bench-outcomes-burst-{run_id}")
                outlasted = not absorbing.done()  # the burst was still being absorbed at the last answer
                absorbed = await absorbing
            finally:
                await burst_producer.stop()
            report.add(
                Row(
                    "P2b",
                    f"decision -> outcome event at {options.rate:g} decisions/s while a burst of {options.burst:,} "
                    f"requests is absorbed (p50 {millis(during.p50)}; burst absorbed in {absorbed.seconds:.1f}s"
                    f"{', still absorbing at the last answer' if outlasted else ', done before the last answer'})",
                    f"p99 {millis(during.p99)}",
                    f"broker produce->consume p99 {millis(broker.p99)} (p50 {millis(broker.p50)})",
                    f"{during.p99 / broker.p99:.1f}x",
                    "<= 3x",
                    during.p99 <= 3 * broker.p99,
                )
            )

        # P3: notifier fan-out to a local webhook sink, against a bare POST loop to the same sink.
        if "notifier" in ROLES and options.wants("P3"):
            say(f"P3: notifier fan-out of {options.notifications:,} webhook deliveries (planned and sent)")
            sink.reset()
            notifier = await start("notifier")
            fanned = await fan_out_noting_cpu(notifier, "P3 end to end")
            await stop(notifier)
            body_size = sink.body_bytes // max(1, len(sink.arrivals))
            say("P3: the same deliveries sent again by a restarted notifier (sending only)")
            # The first notifier stopped at the last POST counted, with the rest of the gates topic unread: the
            # restarted one starts at the topic's end, so its consumer plans nothing while the dispatcher is timed.
            await scenarios.skip_backlog(settings, APPROVAL_GATES.name, "signoff-notifier")
            await database.replay_deliveries(pool)
            sink.reset()
            notifier = await start("notifier")
            sending = await fan_out_noting_cpu(notifier, "P3's dispatcher alone")
            await stop(notifier)
            sink.reset()
            say(f"P3: bare POST loop of {options.notifications:,} requests of {body_size:,} bytes")
            bare = await scenarios.bare_post_loop(
                sink.url, b"x" * body_size, options.notifications, WEBHOOK_CONCURRENCY
            )
            # The design's targets: 0.50 of the bare loop end to end, 0.70 for the dispatcher alone.
            for what, measured, target in (
                ("gate events consumed, rendered, persisted as deliveries and sent", fanned, 0.5),
                ("deliveries sent (already planned: the dispatcher alone)", sending, 0.7),
            ):
                report.add(
                    Row(
                        "P3",
                        f"notifier fan-out, {what}: signed webhook POSTs of {body_size:,} B, "
                        f"{WEBHOOK_CONCURRENCY} in flight",
                        rate(measured.rate),
                        f"bare POST loop {rate(bare.rate)}, {WEBHOOK_CONCURRENCY} in flight",
                        f"{measured.rate / bare.rate:.2f}",
                        f">= {target:.2f}",
                        measured.rate / bare.rate >= target,
                    )
                )

        # P4: 1M pending gates: memory of each role, decision cost, and the plans of the decision lookups.
        if not options.wants("P4", "P6"):
            return report
        pending_now = await database.pending_count(pool)
        if options.pending > pending_now:
            say(f"P4: adding {options.pending - pending_now:,} pending gates")
            template = (await database.pending_tokens(pool, pipeline, 1))[0][0]
            await database.add_filler_gates(pool, template, options.pending - pending_now)
        pending_total = await database.pending_count(pool)
        if options.wants("P4"):
            await stop(approval)
            approval = await start("approval")
            say(f"P4: decisions at {options.rate:g}/s with {pending_total:,} gates pending")
            at_scale = await decide(f"bench-outcomes-scale-{run_id}")
            report.add(
                Row(
                    "P4",
                    f"decision -> outcome p50 with {pending_total:,} pending vs {pending_before:,} pending",
                    millis(at_scale.p50),
                    millis(decided.p50),
                    f"{at_scale.p50 / decided.p50:.2f}",
                    "<= 1.5 (independent of the number pending)",
                    at_scale.p50 <= 1.5 * decided.p50,
                )
            )
        if options.wants("P6"):
            say(f"P6: GET /api/v1/gates?mine=true with {pending_total:,} gates pending")
            listed_after = await scenarios.api_list_latency(api_url, api_token, LIST_SAMPLES)
            report.add(
                Row(
                    "P6",
                    f"GET /api/v1/gates?mine=true p50 with {pending_total:,} pending vs {pending_listed:,} pending",
                    millis(listed_after.p50),
                    millis(listed_before.p50),
                    f"{listed_after.p50 / listed_before.p50:.2f}",
                    "<= 1.5 (index-backed)",
                    listed_after.p50 <= 1.5 * listed_before.p50,
                )
            )
        if not options.wants("P4"):
            return report
        # The other roles (the notifier still has the gates topic's backlog to deliver) after a while at work.
        others = [await start(role) for role in ROLES if role not in ("approval", "api")]
        await asyncio.sleep(OBSERVE_SECONDS)  # letting them work before reading their memory, not awaiting an event
        for process in (approval, *([api] if api is not None else []), *others):
            current, peak = process.memory()
            report.add(
                Row(
                    "P4",
                    f"RSS of the {process.role} role with {pending_total:,} gates pending",
                    megabytes(current),
                    f"peak {megabytes(peak)}",
                    "",
                    "< 200 MB",
                    peak < 200 * 2**20,
                )
            )
        (gate_id, token), *_ = await database.pending_tokens(pool, pipeline, 1)
        async with pool.acquire() as conn:
            sample = await conn.fetchrow(
                "SELECT pipeline_id, stage_id, step_id FROM approval.gates WHERE id = $1", gate_id
            )
            plans = await ApprovalRepository().explain_decision_lookups(
                conn, gate_id, sample["pipeline_id"], sample["stage_id"], sample["step_id"], token
            )
            plans[
                "mine=true (gates the approver may decide, newest first)"
            ] = await ApprovalRepository().explain_decidable_by(conn, user_key(workload.APPROVER), 50)
        report.notes.extend(plan_lines(plans))
        if "notifier" not in ROLES:
            report.notes.append("P3 (notifier fan-out) not measured: the notifier role is not part of this build.")
        report.notes.append(f"the other roles' memory was read after {OBSERVE_SECONDS:g}s at work")
        return report
    finally:
        for process in list(roles):
            await asyncio.to_thread(process.stop)
        await producer.stop()
        if pool is not None:
            await pool.close()
        await sink.stop()
        with contextlib.suppress(Exception):
            await database.drop_database(admin_dsn, db_name)
