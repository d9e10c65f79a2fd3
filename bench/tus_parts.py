"""W10's pieces (bench/tus.py): a tus client over one kept-alive connection, the four
servers it measures, and the backends they share.

The client sends each PATCH's bytes with `socket.sendfile()` from a slice of the source
file: the kernel copies them, and Python never holds more than a response's small body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from common import (
    BENCH_DIR,
    MIB,
    REPO,
    START_TIMEOUT,
    console,
    cpu_seconds,
    descendants,
    free_port,
    running_server,
    start_process,
    stop,
    wait_http,
)

PEER_DIR = BENCH_DIR / "tus_peer"
TUS_VERSION = "1.0.0"
PATCH_TYPE = "application/offset+octet-stream"
TIMEOUT = 600.0  # seconds without progress before a request is abandoned
RECV_BUFFER = MIB
MAX_KEPT_BODY = MIB  # response bodies up to this size are kept (JSON answers)
# chatmedia's settings: a limit above the file, and rate limits no run reaches.
CHATMEDIA_SETTINGS = {"CHATMEDIA_RATE_LIMIT": "1000000/s", "CHATMEDIA_ANON_RATE_LIMIT": "1000000/s"}
S3_BUCKET = "bench"


# --- the client -----------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """A response: status, headers (lower-case names), body (when small), its SHA-256."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    received: int = 0
    sha256: str = ""


class Connection:
    """One HTTP/1.1 connection, kept alive from request to request, as tus clients do."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(RECV_BUFFER)
        self.pending = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: tuple[BinaryIO, int, int] | None = None,
    ) -> Answer:
        """Send a request whose body is `count` bytes of `file` from `offset` (when given),
        and read its whole answer."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.address[0]}:{self.address[1]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {body[2] if body else 0}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body is not None:
            # The server may answer (409, 413…) before taking everything: read its answer.
            with suppress(BrokenPipeError, ConnectionResetError):
                self.sock.sendfile(body[0], body[1], body[2])
        return self._answer(method)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError(f"{self.address}: connection closed mid-answer")
        return data

    def _answer(self, method: str) -> Answer:
        data = self.pending
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, self.pending = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer = Answer(int(status_line.split(" ", 2)[1]), {})
        for line in header_lines:
            name, _, value = line.partition(":")
            answer.headers[name.strip().lower()] = value.strip()
        digest = hashlib.sha256()
        if method == "HEAD" or answer.status in (204, 304):
            pass
        elif answer.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self._line().split(b";")[0], 16):
                self._exactly(size, answer, digest)
                self._line()
            self._line()
        else:
            self._exactly(int(answer.headers.get("content-length", "0")), answer, digest)
        answer.sha256 = digest.hexdigest()
        return answer

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            self.pending += self._recv()
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def _exactly(self, length: int, answer: Answer, digest: Any) -> None:
        view = memoryview(self.buffer)
        while length > 0:
            if self.pending:
                data: bytes | memoryview = self.pending[:length]
                self.pending = self.pending[length:]
            else:
                n = self.sock.recv_into(view, min(length, RECV_BUFFER))
                if n == 0:
                    raise RuntimeError(f"{self.address}: connection closed mid-body")
                data = view[:n]
            digest.update(data)
            if len(answer.body) < MAX_KEPT_BODY:
                answer.body += bytes(data[: MAX_KEPT_BODY - len(answer.body)])
            answer.received += len(data)
            length -= len(data)


@dataclass(frozen=True, slots=True)
class Upload:
    """One tus upload as its client saw it (time.perf_counter instants)."""

    location: str  # the upload's path
    started: float  # the creation request about to leave
    created: float  # its answer read
    patches: tuple[float, ...]  # each PATCH's answer read
    final: Answer  # the last PATCH's answer


def tus_upload(
    address: tuple[str, int], endpoint: str, auth: Mapping[str, str], path: Path, chunk: int
) -> Upload:
    """Creation (no body), then PATCHes of `chunk` bytes read from `path` in order."""
    size = path.stat().st_size
    name = base64.b64encode(path.name.encode()).decode()
    tus = {"Tus-Resumable": TUS_VERSION, **auth}
    connection = Connection(address)
    try:
        with path.open("rb") as source:
            started = time.perf_counter()
            created = connection.request(
                "POST",
                endpoint,
                tus | {"Upload-Length": str(size), "Upload-Metadata": f"filename {name}"},
            )
            created_at = time.perf_counter()
            if created.status != 201 or "location" not in created.headers:
                raise RuntimeError(f"creation answered {created.status}: {created.body[:300]!r}")
            location = urlsplit(created.headers["location"]).path  # absolute or not
            offset, answered, answer = 0, [], created
            while offset < size:
                count = min(chunk, size - offset)
                headers = tus | {"Upload-Offset": str(offset), "Content-Type": PATCH_TYPE}
                answer = connection.request("PATCH", location, headers, (source, offset, count))
                answered.append(time.perf_counter())
                moved = answer.headers.get("upload-offset")
                if answer.status != 204 or moved != str(offset + count):
                    raise RuntimeError(
                        f"PATCH at {offset} answered {answer.status}: {answer.body[:300]!r}"
                    )
                offset += count
    finally:
        connection.close()
    return Upload(location, started, created_at, tuple(answered), answer)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


# --- the servers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TusPeer:
    """A tus server measured: where it listens, its process tree, and whether it is
    chatmedia (whose answer names a File to check) or @tus/server (whose upload is read
    back with GET)."""

    name: str
    backend: str
    pid: int
    address: tuple[str, int]
    endpoint: str
    auth: Mapping[str, str] = field(default_factory=dict)
    is_chatmedia: bool = False
    # Processes doing part of the work for every server of the backend (SeaweedFS and
    # PostgreSQL): their CPU is noted apart, never counted as the machine's other load.
    helpers: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """`server (backend)`."""
        return f"{self.name} ({self.backend})"

    def tree(self) -> list[int]:
        """The server's processes."""
        return [self.pid, *descendants(self.pid)]

    def helper_tree(self) -> list[int]:
        """The helpers' processes."""
        return [p for pid in self.helpers for p in (pid, *descendants(pid))]

    def check(self, upload: Upload, size: int, sha256: str) -> dict[str, Any]:
        """Untimed: what was stored is the source; then drop it. chatmedia: the File the
        last PATCH's Location names has the source's size and SHA-256. @tus/server: a GET of
        the upload hashes to the source's (it keeps no hash)."""
        connection = Connection(self.address)
        try:
            if self.is_chatmedia:
                target = urlsplit(upload.final.headers["location"]).path
                record = json.loads(connection.request("GET", target, self.auth).body)
                ok = record["sha256"] == sha256 and record["size"] == size
                dropped = connection.request("DELETE", target, self.auth).status
                found = {"file_sha256": record["sha256"], "file_size": record["size"]}
            else:
                read = connection.request("GET", upload.location, {})
                ok = read.sha256 == sha256 and read.received == size
                tus = {"Tus-Resumable": TUS_VERSION}
                dropped = connection.request("DELETE", upload.location, tus).status
                found = {"read_sha256": read.sha256, "read_size": read.received}
        finally:
            connection.close()
        if not ok:
            raise RuntimeError(f"{self.label} stored something else: {found}")
        return found | {"sha256_ok": ok, "deleted": dropped == 204}


def ensure_peer_packages() -> dict[str, str]:
    """`npm ci` in bench/tus_peer when its node_modules is missing; the versions run."""
    if not (PEER_DIR / "node_modules" / "@tus" / "server").is_dir():
        console.print("installing @tus/server from npm (npm ci --prefix bench/tus_peer)")
        command = ["npm", "ci", "--prefix", str(PEER_DIR), "--no-audit", "--no-fund"]
        subprocess.run(command, check=True, capture_output=True, timeout=900)
    lock = json.loads((PEER_DIR / "package-lock.json").read_text())["packages"]
    versions = {n: lock[f"node_modules/{n}"]["version"] for n in lock[""]["dependencies"]}
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return versions | {"node": node.stdout.strip()}


@contextmanager
def tus_server(
    workdir: Path, backend: str, env: Mapping[str, str], helpers: tuple[int, ...]
) -> Iterator[TusPeer]:
    """@tus/server on its file store (under `workdir`) or its S3 store (`env` says where)."""
    root = workdir / f"tus-{backend}"
    root.mkdir()
    port = free_port()
    kind = "file" if backend == "local" else "s3"
    command = ["node", str(PEER_DIR / "server.mjs"), kind, str(port), str(root / "files")]
    log = root / "server.log"
    process = start_process(command, root, os.environ | dict(env), log)
    try:
        wait_http(
            process, f"http://127.0.0.1:{port}/healthz", log, time.monotonic() + START_TIMEOUT
        )
        yield TusPeer(
            "@tus/server", backend, process.pid, ("127.0.0.1", port), "/files", helpers=helpers
        )
    finally:
        stop(process)


@contextmanager
def chatmedia_server(
    workdir: Path,
    backend: str,
    settings: Mapping[str, str],
    source: Path | None,
    helpers: tuple[int, ...],
) -> Iterator[TusPeer]:
    """`chatmedia serve` (one worker, its default) with a 1 GiB limit on `settings`' backend."""
    root = workdir / f"chatmedia-{backend}"
    root.mkdir()
    every = CHATMEDIA_SETTINGS | dict(settings)
    with running_server(root, "1GiB", None, source, every) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        auth = {"Authorization": f"Bearer {server.key}"}
        yield TusPeer(
            "chatmedia",
            backend,
            server.process.pid,
            ("127.0.0.1", port),
            "/v1/uploads",
            auth,
            True,
            helpers,
        )


@contextmanager
def peers(workdir: Path, backends: list[str], source: Path | None) -> Iterator[list[TusPeer]]:
    """For each backend, chatmedia and @tus/server: on local disk (chatmedia with SQLite),
    or on one SeaweedFS (chatmedia with PostgreSQL); everything stopped at the end."""
    with ExitStack() as stack:
        found = []
        for backend in backends:
            if backend == "local":
                found.append(
                    stack.enter_context(chatmedia_server(workdir, backend, {}, source, ()))
                )
                found.append(stack.enter_context(tus_server(workdir, backend, {}, ())))
                continue
            settings, env, helpers = stack.enter_context(s3_backend(workdir))
            found.append(
                stack.enter_context(chatmedia_server(workdir, backend, settings, source, helpers))
            )
            found.append(stack.enter_context(tus_server(workdir, backend, env, helpers)))
        yield found


@contextmanager
def s3_backend(workdir: Path) -> Iterator[tuple[dict[str, str], dict[str, str], tuple[int, ...]]]:
    """PostgreSQL and SeaweedFS, with the tests' launchers: chatmedia's settings, the
    @tus/server S3 store's environment, and the two servers' main pids."""
    sys.path.insert(0, str(REPO))
    from tests.pgserver import running_postgres
    from tests.s3server import start_s3_server, stop_s3_server

    postgres_servers = running_postgres()
    postgres = next(postgres_servers)
    weed, s3 = start_s3_server(workdir / "s3", S3_BUCKET)
    try:
        pid_file = postgres.root / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        settings = {
            "CHATMEDIA_DATABASE_URL": postgres.new_database(),
            "CHATMEDIA_STORAGE_URL": s3.url("chatmedia"),
        }
        env = {
            "TUS_S3_ENDPOINT": s3.endpoint,
            "TUS_S3_BUCKET": s3.bucket,
            "TUS_S3_REGION": "us-east-1",
            "TUS_S3_ACCESS_KEY_ID": s3.access_key_id,
            "TUS_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            # The store stages each part in a file of os.tmpdir(): keep that in the run's folder.
            "TMPDIR": str(workdir / "tus-tmp"),
        }
        (workdir / "tus-tmp").mkdir()
        yield settings, env, (weed.pid, postmaster)
    finally:
        stop_s3_server(weed)
        postgres_servers.close()


def helper_cpu(peers_: list[TusPeer]) -> tuple[float, float]:
    """CPU seconds used so far by the helpers (SeaweedFS, PostgreSQL): all of them, and
    those not below this process (PostgreSQL, which pg_ctl detaches), which
    `foreign_cpu_seconds` would otherwise count as someone else's load."""
    helpers = {pid for peer in peers_ for pid in peer.helper_tree()}
    ours = set(descendants(os.getpid()))
    return cpu_seconds(sorted(helpers)), cpu_seconds(sorted(helpers - ours))


def disk_free_gib(path: Path) -> float:
    """Free space where the uploads land."""
    return shutil.disk_usage(path).free / 1024**3
