"""W8 and W9, fan-out: how events reach many listeners.

- W8: 1,000 Server-Sent Events clients on one conversation's stream
  (`GET /v1/conversations/{id}/events`, with the key header or a stream token). Once all
  are connected, messages are posted one at a time at a modest pace; for each message and
  client, the delay from when the POST returned (the commit) to when the client had the
  event. Reported: p50 and p99 over every (client, message) receipt, the delay until the
  last client had each message, and the server's memory per connected client (the RSS of
  its worker processes with the clients connected, minus before, divided by their number).
  Targets: p99 ≤ 250 ms, ≤ 64 KiB per client. The clients run in processes of their own
  (raw asyncio sockets); their CPU time is measured, and compared with how long the server
  takes to reach them all, to tell whether they were the limit.
- W9: 20 webhooks, each with a receiver of its own (a minimal asyncio HTTP server in a
  process of its own, answering 200 at once and checking every ChatMedia-Signature with
  the webhook's secret), registered through the API; then messages are posted and the
  deliveries counted (each (webhook, event) once) until all 20 x N arrived. Reported:
  deliveries per second, and the delay from a message's POST to its delivery.

The server is a fresh `chatmedia serve` for each workload (SQLite and local disk), allowed
to deliver to 127.0.0.1 (CHATMEDIA_IMPORT_ALLOW_NETWORKS, CHATMEDIA_IMPORT_PORTS) for W9.
Raw figures go to bench/results/fanout-<date>.json.

    .venv/bin/python bench/fanout.py [--quick] [--only W8,W9] [--clients 1000] [--messages 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import queue
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

import tools
from common import (
    Server,
    busy_seconds,
    console,
    cpu_seconds,
    descendants,
    exit_on_sigterm,
    export_source,
    foreign_cpu_seconds,
    machine,
    private_kib,
    rss_mib,
    running_server,
    save_json,
    source_state,
    stop,
    suspicious_lines,
    worker_pids,
)
from run import LIMITS_NEVER_REACHED

CONVERSATION = "fanout-1"
CONNECT_BATCH = 100  # SSE connections opened at once
CONNECT_TIMEOUT = 60.0  # seconds for one batch to be connected
SETTLE = 2.0  # seconds after the clients connected before memory is read
IDLE_WINDOW = 3.0  # seconds of server CPU measured with every client connected, no event
DRAIN = 2.0  # seconds after the last message before the receipts are collected
CLIENT_LIMIT_SHARE = 0.5  # client CPU per message, as a share of the fan-out spread
SSE_P99_TARGET_MS = 250.0
SSE_MEMORY_TARGET_KIB = 64.0
SIGNATURE_HEADER = "chatmedia-signature"
OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
WORKLOADS = ("W8", "W9")


# --- helpers shared by both sides ---------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def emit(message: dict[str, Any]) -> None:
    """One JSON line to the parent (a child's stdout is its channel)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def raise_open_files(wanted: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (children inherit it); the
    limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Child:
    """A helper process (this script in one of its child modes) in a process group of its
    own, talking JSON lines: its stdout read by a thread into a queue."""

    def __init__(self, mode: str, *args: str) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), mode, *args]
        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next message holding `key`; raises if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key!r} from {self.process.args[2]} in {timeout:g} s")
            try:
                message = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                raise RuntimeError(
                    f"{self.process.args[2]} exited ({self.process.poll()}) before {key!r}"
                )
            if "error" in message:
                raise RuntimeError(f"{self.process.args[2]}: {message['error']}")
            if key in message:
                return message

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def close(self) -> None:
        stop(self.process)


# --- W8: the SSE clients (child mode "sse-clients") ---------------------------------------


class SseClient(asyncio.Protocol):
    """One event-stream connection: sends the request, decodes the chunked body, splits the
    events and notes when each arrived (the time of the read that completed it)."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.connected: asyncio.Future[float] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.chunked = False
        self.raw = bytearray()
        self.text = bytearray()
        self.receipts: list[tuple[float, bytes]] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self.head[:end]), bytes(self.head[end + 4 :])
            self.in_body = True
            status = head.split(b" ", 2)[1]
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            if status != b"200":
                self._fail(f"answered {status.decode()}: {data[:200]!r}")
                return
        if self.chunked:
            self.raw += data
            self._dechunk()
        else:
            self.text += data
        while (end := self.text.find(b"\n\n")) >= 0:
            block = bytes(self.text[:end])
            del self.text[: end + 2]
            if block.startswith(b":"):  # a comment: ": connected" opens the stream
                if not self.connected.done():
                    self.connected.set_result(now)
                continue
            self.receipts.append((now, block))

    def _dechunk(self) -> None:
        while (line_end := self.raw.find(b"\r\n")) >= 0:
            size = int(bytes(self.raw[:line_end]).split(b";")[0], 16)
            if size == 0:
                self.raw.clear()
                return
            if len(self.raw) < line_end + 2 + size + 2:
                return
            self.text += self.raw[line_end + 2 : line_end + 2 + size]
            del self.raw[: line_end + 2 + size + 2]

    def _fail(self, reason: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(RuntimeError(reason))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(RuntimeError(f"connection lost: {exc}"))


def parse_receipt(block: bytes) -> tuple[str, str | None]:
    """An event block's type and the id of the message it carries."""
    kind, data = "", None
    for line in block.decode().split("\n"):
        name, _, value = line.partition(":")
        if name == "event":
            kind = value.strip()
        elif name == "data":
            data = json.loads(value)
    message = data.get("data", {}).get("id") if data else None
    return kind, message


async def sse_clients(host: str, port: int, target: str, headers: str, count: int) -> None:
    """Open `count` streams in batches, say when all are connected, wait for "stop" on
    stdin, then report every receipt: [message id, monotonic time] per client."""
    loop = asyncio.get_running_loop()
    extra = "".join(f"{h}\r\n" for h in json.loads(headers))
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    ).encode()
    clients: list[SseClient] = []
    started = time.monotonic()
    try:
        for first in range(0, count, CONNECT_BATCH):
            batch = [SseClient(request, loop) for _ in range(min(CONNECT_BATCH, count - first))]
            await asyncio.gather(
                *(loop.create_connection(lambda c=c: c, host, port) for c in batch)  # type: ignore[misc]
            )
            await asyncio.wait_for(asyncio.gather(*(c.connected for c in batch)), CONNECT_TIMEOUT)
            clients += batch
    except Exception as e:  # the parent reports it
        emit({"error": f"{len(clients)} of {count} connected, then {type(e).__name__}: {e}"})
        return
    emit({"ready": len(clients), "connect_s": round(time.monotonic() - started, 3)})
    await loop.run_in_executor(None, sys.stdin.readline)
    lost = sum(c.lost for c in clients)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    receipts = []
    for c in clients:
        mine = []
        for at, block in c.receipts:
            kind, message = parse_receipt(block)
            if kind == "message.created" and message:
                mine.append([message, at])
        receipts.append(mine)
    emit({"receipts": receipts, "lost": lost})


# --- W9: the webhook receivers (child mode "webhook-receivers") ---------------------------


@dataclass
class Deliveries:
    """What every receiver got: the first arrival of each (webhook, event), and the
    duplicates and signature failures."""

    secrets: list[str]
    expected: int
    first: dict[tuple[int, str], tuple[float, str | None]] = field(default_factory=dict)
    requests: int = 0
    duplicates: int = 0
    unsigned: int = 0
    bad_signatures: int = 0
    completed_at: float | None = None

    def record(self, index: int, headers: dict[str, str], body: bytes, at: float) -> None:
        self.requests += 1
        signature = headers.get(SIGNATURE_HEADER)
        if signature is None:
            self.unsigned += 1
        elif not valid_signature(self.secrets[index], signature, body):
            self.bad_signatures += 1
        event = headers.get("chatmedia-event-id", "")
        key = (index, event)
        if key in self.first:
            self.duplicates += 1
            return
        try:
            message = json.loads(body).get("data", {}).get("id")
        except ValueError:
            message = None
        self.first[key] = (at, message)
        if len(self.first) >= self.expected and self.completed_at is None:
            self.completed_at = at
            emit({"complete": at, "requests": self.requests})


def valid_signature(secret: str, header: str, body: bytes) -> bool:
    """ChatMedia-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


class Receiver(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: each request (Content-Length bodies) recorded
    and answered 200 at once; the connection kept for the next."""

    def __init__(self, index: int, deliveries: Deliveries) -> None:
        self.index = index
        self.deliveries = deliveries
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.deliveries.record(self.index, headers, body, now)
            assert self.transport is not None
            self.transport.write(OK_ANSWER)


async def webhook_receivers() -> None:
    """Read {"secrets", "expected"} on stdin, listen on one port per secret, say which,
    say when every expected delivery arrived, and on "stop" report them all."""
    loop = asyncio.get_running_loop()
    config = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    deliveries = Deliveries(config["secrets"], config["expected"])
    servers = []
    for index in range(len(deliveries.secrets)):
        server = await loop.create_server(
            lambda index=index: Receiver(index, deliveries),  # type: ignore[misc]
            "127.0.0.1",
            0,
        )
        servers.append(server)
    emit({"ports": [s.sockets[0].getsockname()[1] for s in servers]})
    await loop.run_in_executor(None, sys.stdin.readline)
    for server in servers:
        server.close()
    emit(
        {
            "deliveries": [[i, e, at, m] for (i, e), (at, m) in deliveries.first.items()],
            "requests": deliveries.requests,
            "duplicates": deliveries.duplicates,
            "unsigned": deliveries.unsigned,
            "bad_signatures": deliveries.bad_signatures,
        }
    )


# --- the measurements -----------------------------------------------------------------------


def auth_of(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def post_message(client: httpx.Client, conversation: str, text: str) -> tuple[str, float, float]:
    """POST a text message; its id, and when the request left and when the answer was in."""
    sent = time.monotonic()
    response = client.post(f"/v1/conversations/{conversation}/messages", json={"body": text})
    returned = time.monotonic()
    if response.status_code != 201:
        raise RuntimeError(f"posting a message answered {response.status_code}: {response.text}")
    return response.json()["id"], sent, returned


def server_memory(server: Server) -> dict[str, float]:
    """The workers' summed RSS and private memory, MiB."""
    pids = worker_pids(server.process.pid)
    return {
        "rss_mib": round(rss_mib(pids), 2),
        "private_mib": round(sum(private_kib(p) for p in pids) / 1024, 2),
    }


def server_cpu(server: Server) -> float:
    return cpu_seconds([server.process.pid, *descendants(server.process.pid)])


def w8(
    args: argparse.Namespace, workdir: Path, source: Path | None, settings: dict[str, str]
) -> dict[str, Any]:
    """1,000 SSE clients, messages one at a time: delays from commit to each receipt, and
    the server's memory per client."""
    directory = workdir / "w8"
    directory.mkdir()
    with running_server(directory, "1MiB", args.chatmedia_workers, source, settings) as server:
        auth = auth_of(server)
        target = f"/v1/conversations/{CONVERSATION}/events"
        headers = [f"Authorization: Bearer {server.key}"]
        if args.sse_auth == "token":
            link = httpx.post(f"{server.base_url}{target}/token", headers=auth).json()["url"]
            target = "/" + link.split("/", 3)[3]
            headers = []
        time.sleep(1.0)  # start-up allocations settle
        before = server_memory(server)
        shares = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
                  for i in range(args.client_procs)]  # fmt: skip
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        children = [
            Child("sse-clients", host, port, target, json.dumps(headers), str(n))
            for n in shares
            if n
        ]
        try:
            connect_started = time.monotonic()
            ready = [
                c.expect("ready", CONNECT_TIMEOUT * (args.clients / CONNECT_BATCH + 1))
                for c in children
            ]
            connect_s = time.monotonic() - connect_started
            console.print(
                f"W8: {sum(r['ready'] for r in ready)} clients connected in {connect_s:.1f} s"
            )
            time.sleep(SETTLE)
            connected = server_memory(server)
            # What the server spends with every client connected and nothing happening.
            idle_before = server_cpu(server)
            time.sleep(IDLE_WINDOW)
            idle_cpu = server_cpu(server) - idle_before
            # The messages, one at a time.
            client_pids = [p for c in children for p in c.pids()]
            client_cpu_before = cpu_seconds(client_pids)
            server_cpu_before = server_cpu(server)
            foreign_before = foreign_cpu_seconds()
            busy_before = busy_seconds()
            started = time.monotonic()
            posted: dict[str, tuple[float, float]] = {}
            with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as client:
                for i in range(args.messages):
                    slot = started + i * args.interval
                    time.sleep(max(0.0, slot - time.monotonic()))
                    message, sent, returned = post_message(client, CONVERSATION, f"fanout {i}")
                    posted[message] = (sent, returned)
            time.sleep(DRAIN)
            wall = time.monotonic() - started
            client_cpu = cpu_seconds(client_pids) - client_cpu_before
            message_cpu = server_cpu(server) - server_cpu_before
            foreign = foreign_cpu_seconds() - foreign_before
            busy = busy_seconds() - busy_before
            after = server_memory(server)
            results = []
            for child in children:
                child.send({"stop": True})
                results.append(child.expect("receipts", 120.0))
        finally:
            for child in children:
                child.close()
        warnings = suspicious_lines(server.log_path)
    receipts = [r for result in results for r in result["receipts"]]
    clients = len(receipts)
    delays: list[float] = []
    from_sent: list[float] = []
    per_message: dict[str, list[float]] = {m: [] for m in posted}
    duplicates = missing = 0
    for client_receipts in receipts:
        seen: set[str] = set()
        for message, at in client_receipts:
            if message not in posted:
                continue
            if message in seen:
                duplicates += 1
                continue
            seen.add(message)
            sent, returned = posted[message]
            delays.append((at - returned) * 1000)
            from_sent.append((at - sent) * 1000)
            per_message[message].append(at)
        missing += len(posted) - len(seen)
    last = [(max(ts) - posted[m][1]) * 1000 for m, ts in per_message.items() if ts]
    spread = [(max(ts) - min(ts)) * 1000 for ts in per_message.values() if ts]
    per_client_kib = (connected["rss_mib"] - before["rss_mib"]) * 1024 / max(1, clients)
    private_per_client_kib = (
        (connected["private_mib"] - before["private_mib"]) * 1024 / max(1, clients)
    )
    client_cpu_per_message_ms = client_cpu / max(1, args.messages) * 1000
    spread_p50 = percentile(spread, 50)
    client_limited = client_cpu_per_message_ms > CLIENT_LIMIT_SHARE * spread_p50
    p99 = percentile(delays, 99)
    metrics = {
        "clients": clients,
        "messages": len(posted),
        "receipts": len(delays),
        "missing": missing,
        "duplicates": duplicates,
        "delay_p50_ms": round(percentile(delays, 50), 2),
        "delay_p99_ms": round(p99, 2),
        "delay_max_ms": round(max(delays, default=math.nan), 2),
        "delay_from_sent_p99_ms": round(percentile(from_sent, 99), 2),
        "last_client_p50_ms": round(percentile(last, 50), 2),
        "last_client_max_ms": round(max(last, default=math.nan), 2),
        "fanout_spread_p50_ms": round(spread_p50, 2),
        "rss_per_client_kib": round(per_client_kib, 1),
        "private_per_client_kib": round(private_per_client_kib, 1),
        "connect_s": round(connect_s, 2),
        "idle_server_cpu_share": round(idle_cpu / IDLE_WINDOW, 3),
        "server_cpu_per_message_ms": round(message_cpu / max(1, args.messages) * 1000, 1),
        "client_cpu_per_message_ms": round(client_cpu_per_message_ms, 1),
        "client_cpu_share": round(client_cpu / wall, 3),
    }
    notes = []
    if client_limited:
        notes.append(
            f"the clients used {client_cpu_per_message_ms:.1f} ms of CPU per message against a "
            f"fan-out spread of {spread_p50:.1f} ms: they may be what limits the delays"
        )
    if missing or duplicates:
        notes.append(f"{missing} receipts missing, {duplicates} duplicated")
    return {
        "workload": "W8",
        "ok": not missing and not duplicates,
        "metrics": metrics,
        "targets": {
            "delay_p99_ms": {"limit": SSE_P99_TARGET_MS, "pass": p99 <= SSE_P99_TARGET_MS},
            "rss_per_client_kib": {
                "limit": SSE_MEMORY_TARGET_KIB,
                "pass": per_client_kib <= SSE_MEMORY_TARGET_KIB,
            },
        },
        "client_limited": client_limited,
        "memory": {"before": before, "connected": connected, "after_messages": after},
        "wall_s": round(wall, 2),
        "server_cpu_s": round(message_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
        "machine_busy_s": round(busy, 2),
        "foreign_cpu_s": round(foreign, 2),
        "connects": ready,
        "lost_connections": sum(r["lost"] for r in results),
        "last_client_ms": [round(x, 2) for x in last],
        "notes": notes,
        "chatmedia_log_warnings": warnings,
    }


def w9(
    args: argparse.Namespace, workdir: Path, source: Path | None, settings: dict[str, str]
) -> dict[str, Any]:
    """20 webhooks, N messages: deliveries per second until all arrived."""
    directory = workdir / "w9"
    directory.mkdir()
    egress = {
        "CHATMEDIA_IMPORT_ALLOW_NETWORKS": "127.0.0.1/32",
        "CHATMEDIA_IMPORT_PORTS": "1024-65535",
    }
    expected = args.webhooks * args.webhook_messages
    hook_secrets = [secrets.token_urlsafe(24) for _ in range(args.webhooks)]
    with running_server(
        directory, "1MiB", args.chatmedia_workers, source, settings | egress
    ) as server:
        auth = auth_of(server)
        receivers = Child("webhook-receivers")
        try:
            receivers.send({"secrets": hook_secrets, "expected": expected})
            ports = receivers.expect("ports", 30.0)["ports"]
            with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as client:
                hooks = []
                for port, secret in zip(ports, hook_secrets, strict=True):
                    body = {
                        "url": f"http://127.0.0.1:{port}/hook",
                        "events": ["message.created"],
                        "secret": secret,
                    }
                    response = client.post("/v1/webhooks", json=body)
                    if response.status_code != 201:
                        raise RuntimeError(
                            f"webhook refused: {response.status_code} {response.text}"
                        )
                    hooks.append(response.json()["id"])
                cpu_pids = [server.process.pid, *descendants(server.process.pid)]
                server_cpu_before = cpu_seconds(cpu_pids)
                receiver_cpu_before = cpu_seconds(receivers.pids())
                foreign_before = foreign_cpu_seconds()
                started = time.monotonic()
                posted: dict[str, tuple[float, float]] = {}
                for i in range(args.webhook_messages):
                    conversation = f"hooks-{i % args.webhook_conversations}"
                    message, sent, returned = post_message(client, conversation, f"webhook {i}")
                    posted[message] = (sent, returned)
                posting_s = time.monotonic() - started
                complete: dict[str, Any] | None = None
                with contextlib.suppress(TimeoutError):
                    complete = receivers.expect("complete", args.webhook_deadline)
                wall = time.monotonic() - started
                server_cpu_used = cpu_seconds(cpu_pids) - server_cpu_before
                receiver_cpu = cpu_seconds(receivers.pids()) - receiver_cpu_before
                foreign = foreign_cpu_seconds() - foreign_before
                states = delivery_states(client, hooks) if complete is None else {}
            receivers.send({"stop": True})
            final = receivers.expect("deliveries", 60.0)
        finally:
            receivers.close()
        warnings = suspicious_lines(server.log_path)
    arrivals = sorted(at for _, _, at, _ in final["deliveries"])
    delays = [(at - posted[m][1]) * 1000 for _, _, at, m in final["deliveries"] if m in posted]
    received = len(final["deliveries"])
    last = arrivals[-1] if arrivals else started
    first = arrivals[0] if arrivals else started
    metrics = {
        "webhooks": args.webhooks,
        "messages": len(posted),
        "expected": expected,
        "delivered": received,
        "deliveries_per_s": round(received / max(last - started, 1e-6), 1),
        "deliveries_per_s_from_first": round((received - 1) / max(last - first, 1e-6), 1),
        "posting_s": round(posting_s, 2),
        "all_delivered_s": round(last - started, 2) if complete else math.nan,
        "delay_p50_ms": round(percentile(delays, 50), 1),
        "delay_p99_ms": round(percentile(delays, 99), 1),
        "duplicates": final["duplicates"],
        "unsigned": final["unsigned"],
        "bad_signatures": final["bad_signatures"],
        "server_cpu_per_delivery_ms": round(server_cpu_used / max(1, received) * 1000, 2),
        "receiver_cpu_share": round(receiver_cpu / wall, 3),
    }
    ok = received == expected and not final["unsigned"] and not final["bad_signatures"]
    notes = []
    if received < expected:
        notes.append(f"only {received} of {expected} deliveries within {args.webhook_deadline:g} s")
    if final["unsigned"] or final["bad_signatures"]:
        notes.append(f"{final['unsigned']} unsigned, {final['bad_signatures']} badly signed")
    return {
        "workload": "W9",
        "ok": ok,
        "metrics": metrics,
        "wall_s": round(wall, 2),
        "server_cpu_s": round(server_cpu_used, 2),
        "receiver_cpu_s": round(receiver_cpu, 2),
        "foreign_cpu_s": round(foreign, 2),
        "requests": final["requests"],
        "delivery_states_when_incomplete": states,
        "notes": notes,
        "chatmedia_log_warnings": warnings,
    }


def delivery_states(client: httpx.Client, hooks: list[str]) -> dict[str, Any]:
    """For a run that did not complete: the statuses and last errors of the first
    webhook's latest deliveries."""
    response = client.get(f"/v1/webhooks/{hooks[0]}/deliveries", params={"limit": 200})
    items = response.json().get("items", [])
    counts: dict[str, int] = {}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    errors = sorted({str(i["lastError"]) for i in items if i.get("lastError")})[:5]
    return {"statuses_of_latest_200": counts, "errors": errors}


# --- report ---------------------------------------------------------------------------------


def print_report(results: list[dict[str, Any]]) -> None:
    for result in results:
        table = Table(
            title=f"{result['workload']}" + ("" if result["ok"] else " [red](FAILED)[/red]")
        )
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("target", justify="right")
        targets = result.get("targets", {})
        for name, value in result["metrics"].items():
            target = ""
            if name in targets:
                mark = "[green]PASS[/green]" if targets[name]["pass"] else "[red]MISS[/red]"
                target = f"≤ {targets[name]['limit']:g} {mark}"
            table.add_row(name, f"{value:g}" if isinstance(value, float) else str(value), target)
        console.print(table)
        for note in result["notes"]:
            console.print(f"[yellow]{result['workload']}: {note}[/yellow]")


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (under a minute)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="W8, W9 or both")
    parser.add_argument("--clients", type=int, default=1000, help="W8 SSE clients (1000)")
    parser.add_argument("--messages", type=int, default=20, help="W8 messages (20)")
    parser.add_argument("--interval", type=float, default=0.5, help="W8 seconds between them")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="W8 processes the clients are spread over"
    )
    parser.add_argument(
        "--sse-auth", choices=("key", "token"), default="key",
        help="W8 clients send the key header, or use a stream token URL",
    )  # fmt: skip
    parser.add_argument("--webhooks", type=int, default=20, help="W9 webhooks (20)")
    parser.add_argument("--webhook-messages", type=int, default=500, help="W9 messages (500)")
    parser.add_argument(
        "--webhook-conversations", type=int, default=10, help="W9 conversations they go to (10)"
    )
    parser.add_argument(
        "--webhook-deadline", type=float, default=180.0,
        help="W9 seconds to wait for every delivery after the posts (180)",
    )  # fmt: skip
    parser.add_argument("--chatmedia-workers", type=int, default=None, help="CHATMEDIA_WORKERS")
    parser.add_argument(
        "--chatmedia-setting", metavar="NAME=VALUE", action="append", default=[],
        help="a CHATMEDIA_* setting for the server (repeat it)",
    )  # fmt: skip
    parser.add_argument(
        "--at-commit", metavar="REV", default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )  # fmt: skip
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.messages, args.interval = 200, 5, 0.3
        args.webhook_messages, args.webhook_deadline = 25, 60.0
    args.workloads = [n.strip().upper() for n in args.only.split(",") if n.strip()]
    if not args.workloads or any(n not in WORKLOADS for n in args.workloads):
        parser.error(f"--only takes {', '.join(WORKLOADS)}")
    if min(args.clients, args.messages, args.client_procs, args.webhooks) < 1:
        parser.error("--clients, --messages, --client-procs and --webhooks must be at least 1")
    if args.webhook_messages < 1 or args.webhook_conversations < 1:
        parser.error("--webhook-messages and --webhook-conversations must be at least 1")
    return args


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in CHILD_MODES:
        CHILD_MODES[sys.argv[1]](sys.argv[2:])
        return
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    limits = raise_open_files(args.clients + 1024)
    source = None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state()
    settings = {"CHATMEDIA_" + k.upper(): v for k, v in LIMITS_NEVER_REACHED.items()}
    for setting in args.chatmedia_setting:
        name, _, value = setting.partition("=")
        settings["CHATMEDIA_" + name.upper()] = value
    started_at = datetime.now(UTC)
    results = []
    with tempfile.TemporaryDirectory(prefix="chatmedia-fanout-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        runners: dict[str, Callable[..., dict[str, Any]]] = {"W8": w8, "W9": w9}
        for name in args.workloads:
            console.print(f"[bold]{name}[/bold]")
            results.append(runners[name](args, workdir, source, settings))
    document = {
        "benchmark": "fanout",
        "date": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine(),
        "source": code,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"chatmedia_settings": settings, "rlimit_nofile": list(limits)},
        "units": {"delay": "ms", "memory": "KiB per client", "rate": "deliveries/s"},
        "results": results,
    }
    saved = save_json("fanout", document)
    print_report(results)
    console.print(f"raw results: {saved}")


def _sse_clients_mode(argv: list[str]) -> None:
    host, port, target, headers, count = argv
    asyncio.run(sse_clients(host, int(port), target, headers, int(count)))


def _receivers_mode(_argv: list[str]) -> None:
    asyncio.run(webhook_receivers())


CHILD_MODES: dict[str, Callable[[list[str]], None]] = {
    "sse-clients": _sse_clients_mode,
    "webhook-receivers": _receivers_mode,
}


if __name__ == "__main__":
    main()
