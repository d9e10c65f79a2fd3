"""A throwaway PostgreSQL server for the tests: Debian's binaries, run with `pg_ctl` in a
temp folder on 127.0.0.1. A missing PostgreSQL fails the tests (it is never a skip)."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Durability is not what these tests check: skip the fsyncs so the server is fast.
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def _binaries() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(candidate).parent
    pytest.fail(
        "PostgreSQL is not installed: the tests need Debian's postgresql package "
        "(apt-get install postgresql) for pg_ctl and initdb"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One server; `new_database()` hands each test a database of its own."""

    def __init__(self) -> None:
        # Its own folder under /tmp: pytest's temp folders are closed to other users.
        self.root = Path(tempfile.mkdtemp(prefix="chatmedia-pg-"))
        self.port = free_port()
        self._bin = _binaries()
        self._names = itertools.count(1)
        # initdb refuses to run as root: then the server runs as Debian's postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def admin_url(self) -> str:
        return f"postgresql://chatmedia@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        if self._as:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        self._run(str(self._bin / "initdb"), "-D", str(data), "-U", "chatmedia", "-A", "trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        self.resume()

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w",
                  "stop")  # fmt: skip

    def resume(self) -> None:
        """Start the initialised server (again, after `stop`: same data, same port)."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=300 {_FAST}"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-o", options, "-l",
                  str(self.root / "log"), "-w", "-t", "60", "start")  # fmt: skip

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"test_{next(self._names)}"
        self._run(str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                  "chatmedia", "-d", "postgres", "-q", "-c", f"CREATE DATABASE {name}")  # fmt: skip
        return f"postgresql://chatmedia@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        """Stop the server if it runs, and remove its folder."""
        # When it never started, the failure that said why is already reported.
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def running_postgres() -> Iterator[PostgresServer]:
    """A started server, closed when the generator is."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server."""
    yield from running_postgres()
