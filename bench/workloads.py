"""The workloads W1-W5, each run against one peer and measured the same way: the wall time,
the CPU time of the peer's processes and of the client, what else the machine did, and the
peak resident memory of the peer while it ran.

- W1 large download: one client fetching the large file `w1_repeat` times in a row
  (`W1x1`), and 8 clients fetching it at once (`W1x8`); MB/s over the bytes received.
- W2 small downloads: wrk, 64 connections for `duration` seconds on the 64 KiB file.
- W3 small uploads: wrk, 32 connections, each request 100 KiB of bytes of its own.
- W4 large upload: the large file once, its first bytes changed each time (dedup), with
  the peer's peak RSS.
- W5 range reads: wrk, 64 connections, `Range` of 64 KiB at random offsets of the large file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client import request
from common import MB, RssSampler, busy_seconds, cpu_times, foreign_cpu_seconds, rss_mib
from peers import Peer, Stored, sha256_of

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
WRK_THREADS = 2  # one per core of the machine the targets are set on
WRK_TIMEOUT = "30s"  # a slow answer is a slow answer, not an error
SETTLE = 0.5  # seconds between the flush of dirty pages and the next measurement
SMALL_FILE = 64 * 1024
UPLOAD_FILE = 100 * 1024
RANGE_LENGTH = 64 * 1024
W2_CONNECTIONS = 64
W3_CONNECTIONS = 32
W5_CONNECTIONS = 64
W1_CLIENTS = 8
BENCH_JSON = re.compile(r"^BENCH_JSON (.+)$", re.MULTILINE)

WORKLOADS = ("W1x1", "W1x8", "W2", "W3", "W4", "W5")


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how big: the defaults are the issue's, `--quick` shrinks them."""

    duration: float = 10.0
    large_size: int = 256 * 1024 * 1024
    w1_repeat: int = 4


@dataclass
class Files:
    """The files each peer serves (stored once, at setup) and the local copies."""

    large: Path
    small: Path
    w4: Path
    stored: dict[str, dict[str, Stored]] = field(default_factory=dict)  # peer -> kind -> file


@dataclass
class Sample:
    """One workload run against one peer."""

    workload: str
    peer: str
    run: int
    metrics: dict[str, float]
    wall_s: float
    server_user_s: float
    server_system_s: float
    client_cpu_s: float
    machine_busy_s: float
    other_cpu_s: float  # busy CPU not used by the peer or the client (softirq work too)
    foreign_cpu_s: float  # CPU of processes outside the benchmark: someone else's load
    rss_before_mib: float
    peak_rss_mib: float
    peak_rss_anon_mib: float
    vm_hwm_mib: float
    rss_after_mib: float
    loadavg_1m: float
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a workload body returns: its figures, whether every answer was right, details."""

    metrics: dict[str, float]
    ok: bool = True
    notes: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


def measure(workload: str, peer: Peer, run: int, body: Callable[[], Outcome]) -> Sample:
    """Run `body` with the clocks and the memory sampler around it. Dirty pages left by the
    previous measurement are flushed first, so that no peer pays for another's writes."""
    os.sync()
    time.sleep(SETTLE)
    memory_pids = peer.memory_pids()
    cpu_pids = peer.cpu_pids()
    load = os.getloadavg()[0]
    rss_before = rss_mib(memory_pids)
    foreign_before = foreign_cpu_seconds()
    with RssSampler(memory_pids) as sampler:
        server_before = cpu_times(cpu_pids)
        client_before = _client_cpu()
        busy_before = busy_seconds()
        started = time.perf_counter()
        outcome = body()
        wall = time.perf_counter() - started
        busy = busy_seconds() - busy_before
        client = _client_cpu() - client_before
        server_after = cpu_times(cpu_pids)
    foreign = foreign_cpu_seconds() - foreign_before
    return Sample(
        workload=workload,
        peer=peer.name,
        run=run,
        metrics=outcome.metrics,
        wall_s=round(wall, 3),
        server_user_s=round(server_after[0] - server_before[0], 2),
        server_system_s=round(server_after[1] - server_before[1], 2),
        client_cpu_s=round(client, 2),
        machine_busy_s=round(busy, 2),
        other_cpu_s=round(busy - client - sum(server_after) + sum(server_before), 2),
        foreign_cpu_s=round(max(0.0, foreign), 2),
        rss_before_mib=round(rss_before, 1),
        peak_rss_mib=round(sampler.peak_kib / 1024, 1),
        peak_rss_anon_mib=round(sampler.peak_anon_kib / 1024, 1),
        vm_hwm_mib=round(sampler.hwm_kib / 1024, 1),
        rss_after_mib=round(rss_mib(memory_pids), 1),
        loadavg_1m=round(load, 2),
        ok=outcome.ok,
        notes=list(outcome.notes),
        raw=outcome.raw,
    )


def _client_cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished children (wrk)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# --- W1 and W4: large transfers with the Python client ----------------------------------


def download(peer: Peer, stored: Stored) -> int:
    """GET a stored file, counting the bytes; raises unless they are all there."""
    response = request(peer.address, "GET", stored.download_path, peer.auth)
    if response.status != 200 or response.received != stored.size:
        raise RuntimeError(
            f"{peer.name}: GET {stored.download_path} answered {response.status} "
            f"with {response.received} bytes, expected {stored.size}"
        )
    return response.received


def w1(peer: Peer, stored: Stored, clients: int, repeat: int) -> Outcome:
    """`clients` clients at once, each downloading the file `repeat` times in a row."""

    def client(_: int) -> int:
        return sum(download(peer, stored) for _ in range(repeat))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        received = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - started
    return Outcome({"mb_per_s": round(received / seconds / MB, 1)}, raw={"bytes": received})


def w4(peer: Peer, source: Path) -> tuple[Outcome, Stored]:
    """Upload the large file once (its first bytes made new: no dedup)."""
    sha256 = make_distinct(source)
    size = source.stat().st_size
    started = time.perf_counter()
    stored = peer.upload(source, sha256)
    seconds = time.perf_counter() - started
    return Outcome({"mb_per_s": round(size / seconds / MB, 1)}, raw={"bytes": size}), stored


def make_distinct(path: Path) -> str:
    """Give the file new first bytes and return its SHA-256 (outside the timed part)."""
    with path.open("r+b") as f:
        f.write(os.urandom(16))
    return sha256_of(path)


# --- W2, W3, W5: wrk --------------------------------------------------------------------


def run_wrk(
    address: tuple[str, int],
    target: str,
    connections: int,
    duration: float,
    script_args: list[str],
    headers: dict[str, str],
    script: Path = WRK_SCRIPT,
) -> dict[str, Any]:
    """Run wrk against the server at `address` and return the figures its script reports
    (`script`: bench/wrk.lua, or another that ends with the same BENCH_JSON line)."""
    threads = min(WRK_THREADS, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    command += ["--timeout", WRK_TIMEOUT, "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    host, port = address
    command += [f"http://{host}:{port}{target}", "--", *script_args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    match = BENCH_JSON.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    figures: dict[str, Any] = json.loads(match.group(1))
    return figures


def _wrk_outcome(figures: dict[str, Any], rate_name: str) -> Outcome:
    seconds = figures["duration_us"] / 1e6
    errors = figures["errors"]
    failed = sum(errors.values())
    latency = figures["latency_us"]
    metrics = {
        rate_name: round(figures["requests"] / seconds, 1),
        "p50_ms": round(latency["p50"] / 1000, 2),
        "p99_ms": round(latency["p99"] / 1000, 2),
        "mb_per_s": round(figures["bytes"] / seconds / MB, 1),
    }
    notes = (f"wrk errors: {errors}",) if failed else ()
    return Outcome(metrics, ok=not failed, notes=notes, raw={"wrk": figures})


def w2(peer: Peer, stored: Stored, duration: float) -> Outcome:
    """64 connections fetching the 64 KiB file for `duration` seconds."""
    figures = run_wrk(
        peer.address, stored.download_path, W2_CONNECTIONS, duration, ["get"], dict(peer.auth)
    )
    return _wrk_outcome(figures, "requests_per_s")


def w3(peer: Peer, duration: float) -> Outcome:
    """32 connections uploading 100 KiB files, each of its own bytes, for `duration` s.
    The files the peer holds afterwards are counted: at least one per answered upload."""
    spec = peer.upload_spec
    before = peer.stored_count()
    args = ["upload", spec.method, spec.path, "1" if spec.multipart else "0"]
    args += [str(UPLOAD_FILE), secrets.token_hex(6)]
    if spec.content_type:
        args.append(spec.content_type)
    target = spec.path.replace("{n}", "first")  # wrk wants a URL; the script sets each path
    figures = run_wrk(peer.address, target, W3_CONNECTIONS, duration, args, dict(peer.upload_auth))
    outcome = _wrk_outcome(figures, "uploads_per_s")
    stored = peer.stored_count() - before
    notes = list(outcome.notes)
    ok = outcome.ok
    if stored < figures["requests"]:
        ok = False
        notes.append(f"{figures['requests']} uploads answered but {stored} files stored")
    raw = outcome.raw | {"files_stored": stored}
    return Outcome(outcome.metrics, ok=ok, notes=tuple(notes), raw=raw)


def w5(peer: Peer, stored: Stored, duration: float) -> Outcome:
    """64 connections reading 64 KiB ranges at random offsets for `duration` seconds. The
    bytes per answer are checked: a peer that ignored Range would send the whole file."""
    args = ["range", str(stored.size), str(RANGE_LENGTH)]
    figures = run_wrk(
        peer.address, stored.ranges_from, W5_CONNECTIONS, duration, args, dict(peer.auth)
    )
    outcome = _wrk_outcome(figures, "requests_per_s")
    per_answer = figures["bytes"] / max(1, figures["requests"])
    if not RANGE_LENGTH < per_answer < RANGE_LENGTH + 2048:  # body plus headers
        notes = (*outcome.notes, f"{per_answer:.0f} bytes per answer: not 64 KiB ranges")
        return Outcome(outcome.metrics, ok=False, notes=notes, raw=outcome.raw)
    return outcome


# --- checks at setup ----------------------------------------------------------------------


def verify_download(peer: Peer, stored: Stored) -> None:
    """GET the file once, untimed, and check its SHA-256."""
    response = request(peer.address, "GET", stored.download_path, peer.auth, hash_body=True)
    if response.status != 200 or response.sha256 != stored.sha256:
        raise RuntimeError(f"{peer.name}: {stored.download_path} does not hold the file")


def probe_range(peer: Peer, stored: Stored, source: Path) -> dict[str, Any]:
    """One Range request for 64 KiB in the middle of the file: does the peer answer 206 with
    exactly those bytes?"""
    start = stored.size // 2 + 12345
    headers = dict(peer.auth) | {"Range": f"bytes={start}-{start + RANGE_LENGTH - 1}"}
    response = request(peer.address, "GET", stored.ranges_from, headers, hash_body=True)
    with source.open("rb") as f:
        f.seek(start)
        expected = f.read(RANGE_LENGTH)
    honoured = response.status == 206 and response.sha256 == hashlib.sha256(expected).hexdigest()
    return {
        "status": response.status,
        "bytes": response.received,
        "content_range": response.headers.get("content-range"),
        "honoured": honoured,
    }


def stored_upload(peer: Peer, path: Path) -> Stored:
    """Store a file untimed (setup), checking the peer's answer."""
    return peer.upload(path, sha256_of(path))
