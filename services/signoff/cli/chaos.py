"""`signoff chaos`: the fault-injection suite against the roles as processes under `signoff dev up`."""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import click

from signoff.bench import workload
from signoff.bench.runner import machine
from signoff.chaos.stack import ChaosError, SupervisedStack
from signoff.chaos.suite import ChaosOptions, Suite, markdown
from signoff.cli.errors import CliError


@click.command()
@click.option("--requests", default=3_000, show_default=True, help="R1: requests (gates) while roles are killed.")
@click.option("--decisions", default=1_500, show_default=True, help="R1: decisions while roles are killed.")
@click.option("--kills", default=9, show_default=True, help="R1: kill -9s, the roles in turn.")
@click.option("--duplicated", default=500, show_default=True, help="R2: requests (and decisions) sent three times.")
@click.option("--malformed", default=5_000, show_default=True, help="R3: malformed records.")
@click.option("--valid", "valid_among", default=500, show_default=True, help="R3 / R4: valid requests.")
@click.option("--freeze", "freeze_seconds", default=10.0, show_default=True, help="R4: seconds PostgreSQL is frozen.")
@click.option("--burst", default=20_000, show_default=True, help="R5: requests in the burst.")
@click.option("--rate", default=200.0, show_default=True, help="R1 / R5: decisions per second.")
@click.option("--burst-decisions", default=1_500, show_default=True, help="R5: decisions during the burst.")
@click.option("--seed", default=15, show_default=True, help="Seed of the kill schedule.")
@click.option("--write", "write", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
def chaos(write: Path | None, **counts) -> None:
    """Inject faults into a supervised dev stack (kill -9 of roles, duplicates, malformed records, PostgreSQL frozen,
    broker restarted, a burst) and print what was lost, doubled or stuck; exit 1 on any of it."""
    if min(counts["requests"], counts["duplicated"], counts["valid_among"], counts["burst"]) < 1:
        raise CliError("--requests, --duplicated, --valid and --burst must be at least 1")
    if counts["decisions"] > counts["requests"]:
        raise CliError("--decisions cannot exceed --requests (each decides one of R1's gates)")
    options = ChaosOptions(**counts, large=min(20, counts["malformed"] // 5))
    command = "signoff chaos " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else "signoff chaos"
    home = Path(tempfile.mkdtemp(prefix="signoff-chaos-"))
    home.chmod(0o777)  # reachable by the unprivileged account PostgreSQL runs as when we are root
    (home / "directory.yaml").write_text(workload.directory_yaml())
    env = os.environ | {
        "SIGNOFF_DIRECTORY_FILE": str(home / "directory.yaml"),
        "SIGNOFF_LOG_FORMAT": "json",
        "SIGNOFF_LOG_LEVEL": "info",  # R4 reads the approval role's health port from its service_started line
    }
    stack = SupervisedStack(home / "dev", env)

    def say(line: str) -> None:
        click.echo(f"chaos: {line}", err=True)

    async def main():
        async with Suite(stack, options, say) as suite:
            return await suite.run()

    try:
        say(f"starting a supervised dev stack in {home}")
        stack.start()
        results = asyncio.run(main())
    except ChaosError as exc:
        raise CliError(f"{exc} (logs in {home / 'dev'})") from exc
    finally:
        stack.stop()
    table = markdown(results)
    click.echo(table)
    lost = [r.id for r in results if not r.ok]
    if write is not None:
        write.write_text(_document(table, command, lost))
    if lost:
        click.echo(f"loss in {', '.join(lost)}; logs in {home / 'dev'}", err=True)
        raise SystemExit(1)
    shutil.rmtree(home, ignore_errors=True)


def _document(table: str, command: str, lost: list[str]) -> str:
    return f"""# Reliability

`signoff chaos` runs the roles as processes under `signoff dev up`'s supervisor (which restarts them) on the
embedded broker and PostgreSQL, injects faults while a workload runs on the real topics, and counts what was lost,
doubled or left stuck; it exits 1 on any of it. CI runs it at reduced counts (`tests/chaos`).

- **R1** kill -9 of each role in turn, at random moments (mid-batch), while requests and then decisions are consumed.
- **R2** every request and every decision published three times.
- **R3** a malformed flood among valid requests; the lag of the approval role's group on the requests topic.
- **R4** PostgreSQL's processes stopped (SIGSTOP) and resumed; `/readyz` of the approval role must flip and recover;
  then the broker killed: the supervisor starts it again on its port (empty: memory storage) and restarts the
  roles, and what is sent to it is applied.
- **R5** a burst of requests while decisions come at a steady rate.

## Measured

machine: {machine()} ({platform.python_implementation()} {platform.python_version()})
command: `{command}`

{table}

{"Every check is 0: nothing lost, nothing resolved twice." if not lost else "LOSS in " + ", ".join(lost)}

What the suite does not cover: the executor is killed (and restarted) in R1 but runs no pipeline there; that its
scripts die with it, and that a resuming replica kills an earlier attempt first, is tested with real `kill -9` and
`SIGSTOP` in `tests/integration/executor/test_script_processes.py`. R4's broker keeps nothing (memory storage), so
"nothing lost that the broker kept" is checked on what is sent to it after the restart; a broker with storage
(`s3://`, real Kafka) is not part of the suite.
"""
