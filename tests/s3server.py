"""A throwaway S3 server for the tests: s3rver (installed into .tools/ by `make test`), run
with node in a temp folder on 127.0.0.1 with one bucket. A missing s3rver fails the tests (it
is never a skip)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

_S3RVER = Path(__file__).resolve().parent.parent / ".tools" / "node_modules" / ".bin" / "s3rver"
_LISTENING = re.compile(r"S3rver listening on [^:\s]+:(\d+)")


@dataclass(frozen=True, slots=True)
class S3Server:
    """A running s3rver; it knows one key pair, S3RVER / S3RVER."""

    endpoint: str
    bucket: str
    root: Path
    access_key_id: str = "S3RVER"
    secret_access_key: str = "S3RVER"

    def url(self, prefix: str) -> str:
        """An s3:// URL for a prefix of the bucket, with everything needed to reach it."""
        return (
            f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"
            f"&path_style=true&access_key_id={self.access_key_id}"
            f"&secret_access_key={self.secret_access_key}"
        )


def _command() -> list[str]:
    node = shutil.which("node")
    if node is None or not _S3RVER.exists():
        pytest.fail(
            f"s3rver is not installed at {_S3RVER} (or node is missing): the S3 tests need it; "
            "`make test` installs it (npm install --prefix .tools s3rver@3.7.1)"
        )
    return [node, str(_S3RVER.resolve())]


def start_s3rver(
    root: Path, bucket: str = "chatmedia", port: int = 0
) -> tuple[subprocess.Popen[bytes], S3Server]:
    """Start s3rver (on a port of its choosing unless given) and wait until it answers."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "s3rver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_command(), "--directory", str(root / "data"), "--address", "127.0.0.1",
             "--port", str(port), "--silent", "--configure-bucket", bucket],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            server = S3Server(f"http://127.0.0.1:{found.group(1)}", bucket, root)
            try:
                httpx.get(server.endpoint, timeout=5)  # any answer: it serves requests
            except httpx.HTTPError:
                break
            return process, server
        time.sleep(0.05)
    stop_s3rver(process)
    pytest.fail(f"s3rver did not start: {log.read_text(errors='replace')[-2000:]}")


def stop_s3rver(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server."""
    root = Path(tempfile.mkdtemp(prefix="chatmedia-s3-"))
    try:
        process, server = start_s3rver(root)
        try:
            yield server
        finally:
            stop_s3rver(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
