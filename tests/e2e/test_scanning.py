"""Malware scanning through a real `chatmedia serve` and a real clamd (tests/clamdserver.py,
its own signature database): clean files served, infected ones refused on every way in
and recorded, a scanner outage never losing an upload nor letting it out unscanned, new
signatures quarantining an old file everywhere at once, and the admin's tools."""

from __future__ import annotations

import hashlib
import io
import secrets
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing

import httpx
import pytest

from chatmedia.processing.jobs import LEASE
from tests.clamdserver import EICAR, MARKER, ClamdServer, running_clamd
from tests.conftest import png_bytes
from tests.e2e.conftest import Server, replay, wait_for
from tests.e2e.test_cache import statuses
from tests.sources import SourceServer

pytestmark = pytest.mark.e2e
INFECTED = "malware_detected"
EICAR_NAME = "Chatmedia-Test-Eicar.UNOFFICIAL"
MARKER_NAME = "Chatmedia-Test-Marker.UNOFFICIAL"
# clamd refuses streams larger than this (StreamMaxLength): a scan that always fails.
MAX_STREAM = 1024 * 1024


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with running_clamd(tmp_path_factory.mktemp("clamd"), max_stream=MAX_STREAM) as server:
        yield server


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server], clamd: ClamdServer) -> Server:
    return start_server(
        clamav_url=clamd.tcp_url, workers="2", rescan_check_interval="1s",
        scan_max_size="512KiB", import_allow_networks="127.0.0.1/32", import_ports="1-65535",
    )  # fmt: skip


@pytest.fixture
def clamd_up(clamd: ClamdServer) -> Iterator[ClamdServer]:
    """clamd running at the start and at the end of the test, whatever it did to it."""
    _ensure_running(clamd)
    yield clamd
    _ensure_running(clamd)


def _ensure_running(clamd: ClamdServer) -> None:
    if clamd.running:
        clamd.resume()
        return
    clamd.stop()
    clamd.start()


def upload(
    client: httpx.Client, body: bytes, conversation: str, name: str = "f.bin"
) -> httpx.Response:
    return client.post(
        "/v1/files", files={"file": (name, body)}, data={"conversationId": conversation}
    )


def unique_png() -> bytes:
    """A PNG no other test uploads (a comment chunk makes its bytes new)."""
    return png_bytes(8, 8) + secrets.token_bytes(16)


def scan_status(client: httpx.Client, file_id: str) -> str | None:
    answer = client.get(f"/v1/files/{file_id}")
    return answer.json()["scan"]["status"] if answer.status_code == 200 else None


def test_a_clean_file_is_scanned_and_served(server: Server, clamd_up: ClamdServer) -> None:
    with server.client(headers=server.auth) as client:
        answer = upload(client, unique_png(), "scan-clean", "a.png")
        assert answer.status_code == 201, answer.text
        file = answer.json()
        assert file["scan"]["status"] == "clean"
        assert "scannedAt" in file["scan"]
        assert client.get(f"/v1/files/{file['id']}/content").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_infected_uploads_are_refused_on_every_way_in(
    server: Server, clamd_up: ClamdServer
) -> None:
    conversation = "scan-refused"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("inner/readme.txt", b"hello " + MARKER + b" world")
    with server.client(headers=server.auth) as client, SourceServer() as source:
        answers = {
            "native": upload(client, EICAR, conversation, "eicar.com"),
            "zip": upload(client, zipped.getvalue(), conversation, "docs.zip"),
            "file-engine": client.post(
                "/file-engine/api/uploadFileStream",
                files={"file": ("eicar.txt", EICAR)}, data={"conversationId": conversation},
            ),
            "import": client.post(
                "/v1/files/import",
                json={"sourceUrl": source.url("/eicar.txt"), "conversationId": conversation},
            ),
            "message": client.post(
                f"/v1/conversations/{conversation}/messages",
                files={"file": ("eicar.txt", EICAR)}, data={"body": "see attached"},
            ),
        }  # fmt: skip
        for route, answer in answers.items():
            expected = 404 if route == "file-engine" else 422
            assert answer.status_code == expected, (route, answer.text)
            assert answer.json()["error"]["code"] == INFECTED, route
        assert MARKER_NAME in answers["zip"].json()["error"]["message"]
        assert EICAR_NAME in answers["native"].json()["error"]["message"]
        # Nothing of them is visible or stored, but their record.
        listed = client.get("/v1/files", params={"conversationId": conversation}).json()
        assert listed["items"] == []
        messages = client.get(f"/v1/conversations/{conversation}/messages").json()
        assert messages["items"] == []
        refused = {hashlib.sha256(body).hexdigest() for body in (EICAR, zipped.getvalue())}
        assert not refused & {path.name for path in server.stored_blobs()}
        # One record per content: the same bytes again are refused from it.
        records = client.get("/v1/admin/quarantine").json()["items"]
        found = {r["signature"]: r for r in records}
        assert set(found) >= {EICAR_NAME, MARKER_NAME}
        for record in (found[EICAR_NAME], found[MARKER_NAME]):
            assert record["fileId"] is None
            assert record["bytesKept"] is False
            assert record["keyId"] is not None


def test_refused_bytes_are_refused_at_once_even_with_the_scanner_down(
    server: Server, clamd_up: ClamdServer
) -> None:
    with server.client(headers=server.auth) as client:
        assert upload(client, EICAR, "scan-again").status_code == 422
        clamd_up.stop(kill=True)
        again = upload(client, EICAR, "scan-again")
        assert again.status_code == 422, again.text
        assert again.json()["error"]["code"] == INFECTED


def test_a_file_over_the_scan_limit_is_skipped_and_served(
    server: Server, clamd_up: ClamdServer
) -> None:
    with server.client(headers=server.auth) as client:
        body = EICAR + secrets.token_bytes(600 * 1024)  # past SCAN_MAX_SIZE: not scanned
        answer = upload(client, body, "scan-large")
        assert answer.status_code == 201, answer.text
        file = answer.json()
        assert file["scan"]["status"] == "skipped"
        assert client.get(f"/v1/files/{file['id']}/content").status_code == 200


def test_an_outage_keeps_uploads_pending_until_scanned_across_a_crash(
    server: Server, clamd_up: ClamdServer
) -> None:
    clamd_up.stop(kill=True)
    with server.client(headers=server.auth) as client:
        answer = upload(client, unique_png(), "scan-outage", "photo.png")
        assert answer.status_code == 201, answer.text
        file = answer.json()
        assert file["scan"] == {"status": "pending"}
        content = client.get(f"/v1/files/{file['id']}/content")
        assert content.status_code == 409
        assert content.json()["error"]["code"] == "file_not_ready"
        assert int(content.headers["retry-after"]) > 0
        assert httpx.get(file["url"]).status_code == 409  # a signed link
        assert client.get(f"/v1/files/{file['id']}/preview").status_code == 409  # nor a preview
        engine = client.get(
            "/file-engine/api/downloadFileStream", params={"filename": file["storedName"]}
        )
        assert engine.status_code == 404
        assert client.get("/readyz").status_code == 503
    # A crash while the scan waits loses nothing: the job is in the database.
    server.kill()
    server.start()
    clamd_up.start()
    with server.client(headers=server.auth) as client:
        wait_for(lambda: scan_status(client, file["id"]) == "clean")
        assert client.get(f"/v1/files/{file['id']}/content").status_code == 200
        events = replay(client, "scan-outage", 2)
    kinds = [(e.event, e.data["data"]["scan"]["status"]) for e in events]
    assert kinds == [("file.created", "pending"), ("file.updated", "clean")]


def test_clamd_hanging_then_killed_mid_scan_leaves_the_file_pending_then_clean(
    server: Server, clamd_up: ClamdServer
) -> None:
    clamd_up.pause()  # connections are taken, never answered
    try:
        with server.client(headers=server.auth) as client:
            started = time.monotonic()
            answer = upload(client, unique_png(), "scan-hang", "photo.png")
            assert answer.status_code == 201, answer.text
            assert time.monotonic() - started < 10  # the inline wait is bounded
            file = answer.json()
            assert file["scan"]["status"] == "pending"
    finally:
        clamd_up.stop(kill=True)  # mid-scan, from the job's point of view
    clamd_up.start()
    with server.client(headers=server.auth) as client:
        wait_for(lambda: scan_status(client, file["id"]) == "clean", timeout=90)


def test_a_crash_mid_scan_leaves_the_job_due_again_within_its_lease(
    server: Server, clamd_up: ClamdServer
) -> None:
    body = b"crash notes " + secrets.token_hex(8).encode()
    clamd_up.pause()
    try:
        with server.client(headers=server.auth) as client:
            answer = upload(client, body, "scan-crash", "notes.txt")
            assert answer.status_code == 201, answer.text
            file = answer.json()
            assert file["scan"]["status"] == "pending"
        # Its job is claimed at once and hangs on clamd: the server dies holding the claim.
        wait_for(lambda: _scan_attempts(server, hashlib.sha256(body).hexdigest()) == 1)
        server.kill()
    finally:
        clamd_up.resume()
    server.start()
    with server.client(headers=server.auth) as client:
        wait_for(lambda: scan_status(client, file["id"]) == "clean", LEASE.total_seconds() + 10)


def _scan_attempts(server: Server, sha256: str) -> int:
    """How many times the scan job of blob `sha256` was claimed (0: no job)."""
    with closing(
        sqlite3.connect(f"file:{server.data_dir / 'chatmedia.db'}?mode=ro", uri=True)
    ) as db:
        row = db.execute(
            "SELECT attempts FROM jobs WHERE kind = 'scan' AND subject = ?", (sha256,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_new_signatures_quarantine_an_old_file_everywhere_at_once(
    server: Server, clamd_up: ClamdServer, worker_clients: list[httpx.Client]
) -> None:
    conversation = "scan-later"
    marker = b"CHATMEDIA-LATER-" + secrets.token_hex(8).encode()
    reader = server.cli(
        "keys", "create", "--name", "reader", "--scope", "files:read", "--scope", "messages:read"
    ).stdout.split()[-1]
    with server.client(headers=server.auth) as client:
        answer = client.post(
            f"/v1/conversations/{conversation}/messages",
            files={"file": ("notes.txt", b"meeting notes " + marker)}, data={"body": "notes"},
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        message = answer.json()
        file = message["file"]
        assert file["scan"]["status"] == "clean"
        as_reader = {"Authorization": f"Bearer {reader}"}
        content = f"{server.url}/v1/files/{file['id']}/content"
        engine = f"{server.url}/file-engine/api/downloadFileStream?filename={file['storedName']}"
        # Both workers have served (and cached) the file and its key.
        for url, headers in ((content, as_reader), (file["url"], None), (engine, None)):
            assert statuses(worker_clients, url, headers) == {200}
        # New signatures: clamd's version changes, recent files are scanned again.
        clamd_up.add_signature("Chatmedia-Test-Later", marker)
        clamd_up.reload()
        wait_for(
            lambda: client.get(f"/v1/files/{file['id']}").json()["scan"]["status"] == "infected"
        )
        # Gone for everyone but admins, on both workers, from the very next request.
        for url, headers in ((content, as_reader), (file["url"], None), (engine, None)):
            assert statuses(worker_clients, url, headers) == {404}, url
        assert statuses(worker_clients, f"{server.url}/v1/files/{file['id']}", as_reader) == {404}
        with server.client(headers=as_reader) as other:
            listed = other.get("/v1/files", params={"conversationId": conversation}).json()
            assert listed["items"] == []
            messages = other.get(f"/v1/conversations/{conversation}/messages").json()["items"]
            assert [m["file"] for m in messages] == [None]
        admin_view = client.get(f"/v1/files/{file['id']}").json()
        assert admin_view["scan"]["signature"] == "Chatmedia-Test-Later.UNOFFICIAL"
        assert client.get(f"/v1/files/{file['id']}/content").status_code == 404
        events = replay(client, conversation, 3)
        assert [e.event for e in events] == ["file.created", "message.created", "file.quarantined"]
        assert events[2].data["data"] == {
            "id": file["id"], "conversationId": conversation, "scan": {"status": "infected"}
        }  # fmt: skip
        records = client.get("/v1/admin/quarantine").json()["items"]
        assert any(r["fileId"] == file["id"] for r in records)
        # The same bytes uploaded again are refused at once.
        again = upload(client, b"meeting notes " + marker, conversation)
        assert again.status_code == 422
        # An admin's release brings it back, everywhere.
        released = client.post(f"/v1/admin/files/{file['id']}/release")
        assert released.status_code == 200, released.text
        assert released.json()["scan"]["status"] == "clean"
        assert statuses(worker_clients, content, as_reader) == {200}
        assert upload(client, b"meeting notes " + marker, conversation).status_code == 201


def test_admin_rescan_and_the_command_line(server: Server, clamd_up: ClamdServer) -> None:
    with server.client(headers=server.auth) as client:
        file = upload(client, unique_png(), "scan-admin", "p.png").json()
        answer = client.post(f"/v1/admin/files/{file['id']}/rescan")
        assert answer.status_code == 202, answer.text
        wait_for(lambda: client.get(f"/v1/files/{file['id']}").json()["scan"]["scannedAt"]
                 != file["scan"]["scannedAt"])  # fmt: skip
        reader = server.cli("keys", "create", "--name", "r2", "--scope", "files:read")
        as_reader = {"Authorization": f"Bearer {reader.stdout.split()[-1]}"}
        refused = client.post(f"/v1/admin/files/{file['id']}/rescan", headers=as_reader)
        assert refused.status_code == 403
        assert client.get("/v1/admin/quarantine", headers=as_reader).status_code == 403
    listed = server.cli("quarantine", "list")
    assert EICAR_NAME in listed.stdout
    purged = server.cli("quarantine", "purge")
    assert "purged" in purged.stdout


def test_scan_fail_open_serves_files_whose_scan_failed_and_closed_does_not(
    start_server: Callable[..., Server], clamd: ClamdServer
) -> None:
    _ensure_running(clamd)
    body = secrets.token_bytes(2 * MAX_STREAM)  # clamd refuses the stream: the scan fails
    for mode, served in (("open", 200), ("closed", 409)):
        node = start_server(clamav_url=clamd.unix_url, scan_fail=mode, scan_keep_infected="true")
        with node.client(headers=node.auth) as client:
            file = upload(client, body, "scan-fail").json()
            assert file["scan"]["status"] == "pending"
            wait_for(lambda f=file["id"]: scan_status(client, f) == "error")
            assert client.get(f"/v1/files/{file['id']}/content").status_code == served
            # Refused bytes kept for inspection with SCAN_KEEP_INFECTED, until purged.
            blobs = len(node.stored_blobs())
            assert upload(client, EICAR, "scan-fail").status_code == 422
            assert len(node.stored_blobs()) == blobs + 1
            [record] = client.get("/v1/admin/quarantine").json()["items"]
            assert record["bytesKept"] is True
        node.cli("quarantine", "purge")
        assert len(node.stored_blobs()) == blobs
        node.stop()
