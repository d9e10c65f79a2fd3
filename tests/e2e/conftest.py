"""A real `chatmedia serve` process on 127.0.0.1, in a temp folder, for the main flows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import png_bytes
from tests.receivers import sse_events

CHATMEDIA = str(Path(sys.executable).with_name("chatmedia"))
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One server process and the environment its CLI commands share."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMEDIA_")}
        self.env |= {
            "CHATMEDIA_DATA_DIR": str(self.data_dir),
            "CHATMEDIA_HOST": "127.0.0.1",
            "CHATMEDIA_PORT": str(self.port),
        }
        self.env |= {"CHATMEDIA_" + k.upper(): v for k, v in settings.items()}
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [CHATMEDIA, "serve"],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start:\n" + self.log.read_text())
        if not self.key:  # a server on a database with keys prints none: set it beforehand
            self.key = re.findall(r"^(cm_\S+)$", self.log.read_text(), re.MULTILINE)[0]

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown work runs."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CHATMEDIA, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        pids, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(c) for c in children]
            todo += [int(c) for c in children]
        return pids

    def clients_on_each_worker(self, count: int, **kwargs: object) -> dict[int, list[httpx.Client]]:
        """`count` open clients per worker process, by worker. Which worker accepts a
        connection is the kernel's choice and one may take many in a row, so clients are
        opened until each holds `count`; the rest are closed. The caller closes these."""
        assert self.process is not None
        pid = self.process.pid
        workers = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        held: dict[int, list[httpx.Client]] = {pid: [] for pid in workers}
        for _ in range(50 * count * len(workers)):
            if all(len(clients) >= count for clients in held.values()):
                break
            client = self.client(**kwargs)
            held[self._holder(client, workers)].append(client)
        for client in (c for clients in held.values() for c in clients[count:]):
            client.close()
        assert all(len(c) >= count for c in held.values()), {p: len(c) for p, c in held.items()}
        return {pid: clients[:count] for pid, clients in held.items()}

    @staticmethod
    def _holder(client: httpx.Client, workers: list[int]) -> int:
        """The process holding the server end of `client`'s connection, opened here by a
        request without a key: its socket's inode, by the client's port in /proc/net/tcp."""
        answer = client.get("/healthz")
        assert answer.status_code == 200
        port = answer.extensions["network_stream"].get_extra_info("client_addr")[1]
        rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        inode = next(r[9] for r in rows if int(r[2].split(":")[1], 16) == port)
        for pid in workers:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if fd.readlink().name == f"socket:[{inode}]":
                        return pid
                except FileNotFoundError:  # closed while listed
                    continue
        raise AssertionError(f"no worker holds the connection from port {port}")

    def peak_rss_mib(self) -> float:
        """The largest peak resident size (VmHWM) among the server's worker processes."""
        peaks = []
        for pid in self.worker_pids():
            status = Path(f"/proc/{pid}/status").read_text()
            peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024)  # type: ignore[union-attr]
        return max(peaks)

    def stored_blobs(self) -> list[Path]:
        return [p for p in (self.data_dir / "blobs").rglob("*") if p.is_file()]


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def replay(client: httpx.Client, conversation: str, count: int) -> list[Any]:
    """The conversation's first `count` events, replayed from the log."""
    url = client.post(f"/v1/conversations/{conversation}/events/token").json()["url"]
    events = []
    with httpx.stream("GET", url, headers={"Last-Event-ID": "0"}, timeout=10) as response:
        for event in sse_events(response):
            events.append(event)
            if len(events) == count:
                break
    return events


def assert_unavailable(client: httpx.Client, requests: list[tuple[str, str]], secret: str) -> None:
    """Each (method, path) is answered 503 backend_unavailable within 10 s, without `secret`
    in the answer; a POST carries an upload."""
    for method, path in requests:
        files = {"file": ("b.png", png_bytes(8, 8))} if method == "POST" else None
        started = time.monotonic()
        answer = client.request(method, path, files=files)
        assert time.monotonic() - started < 10, path
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["error"]["code"] == "backend_unavailable"
        assert answer.headers["retry-after"] == "1"
        assert secret not in answer.text


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(**settings: str) -> Server:
        server = Server(tmp_path_factory.mktemp("server"), **settings)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(scope="module")
def worker_clients(server: Server) -> Iterator[list[httpx.Client]]:
    """Three connections held on each worker of the module's `server`, so that a check
    sent on all of them asks every worker."""
    held = [c for cs in server.clients_on_each_worker(3).values() for c in cs]
    yield held
    for client in held:
        client.close()
