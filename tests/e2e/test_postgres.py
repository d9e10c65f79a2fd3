"""A real server on PostgreSQL: it refuses a schema that is behind, answers 503 while the
database is down, and recovers by itself when it is back."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import CHATMEDIA, Server, assert_unavailable
from tests.pgserver import PostgresServer, running_postgres

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: these tests stop and start it."""
    yield from running_postgres()


def test_a_schema_behind_is_refused_until_migrated(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    server = Server(tmp_path, database_url=own_postgres.new_database())
    refused = subprocess.run(
        [CHATMEDIA, "serve"], cwd=tmp_path, env=server.env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "run `chatmedia migrate`" in refused.stdout + refused.stderr
    server.cli("migrate")
    server.start()
    try:
        assert httpx.get(server.url + "/readyz", timeout=5).json() == {"status": "ok"}
    finally:
        server.stop()


def test_an_outage_is_503_quickly_and_the_node_recovers(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    server = Server(tmp_path, database_url=own_postgres.new_database())
    server.cli("migrate")
    server.start()
    try:
        with server.client(headers=server.auth) as client:
            file = client.post("/v1/files", files={"file": ("a.png", png_bytes())}).json()
            own_postgres.stop()
            try:
                needing_the_database = [
                    ("GET", "/readyz"),
                    ("GET", f"/v1/files/{file['id']}"),
                    ("GET", f"/file-engine/api/downloadFileStream?filename={file['storedName']}"),
                    ("POST", "/v1/files"),
                ]
                # Nothing of the database URL in an answer.
                assert_unavailable(client, needing_the_database, "chatmedia@")
            finally:
                own_postgres.resume()
            # The refused upload left no blob behind; the first file's is still there.
            stored = {path.name for path in server.stored_blobs()}
            assert hashlib.sha256(png_bytes(8, 8)).hexdigest() not in stored
            assert file["sha256"] in stored
            deadline = time.monotonic() + 15
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the node did not recover"
                time.sleep(0.2)
            content = client.get(f"/v1/files/{file['id']}/content")
            assert content.status_code == 200
            assert content.content == png_bytes()
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
