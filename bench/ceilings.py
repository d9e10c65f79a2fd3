"""Ceilings: what this machine and the chosen stack allow on W2 and W3, measured apart from
chatmedia's own work, so that the targets chatmedia misses can be read against them.

The cases, interleaved within each run (their order rotating from run to run), with the
load of bench/run.py's workloads (wrk, bench/wrk.lua):

W2, a 64 KiB download, 64 connections:
  - nginx, serving the file with sendfile: the issue's ceiling (the target is 0.25x of it);
  - a bare ASGI app on granian answering 64 KiB from memory, one worker and two
    (ceiling_apps.bare_64k): what any Python app served by granian can reach;
  - chatmedia, one worker: GET /v1/files/{id}/content with the key.
W3, a 100 KiB upload, 32 connections, each of its own bytes:
  - chatmedia's HTTP layer alone: POST /bench/read-form of ceiling_apps.read_form_app,
    which checks the key and reads the form as POST /v1/files does, then answers 201;
  - chatmedia: POST /v1/files on the same server (staged, type-checked, fsynced, committed);
  - chatmedia's local store alone: LocalBlobStore.put and promote from 32 tasks in this
    process (written, hashed, fsynced, renamed into place, folder fsynced; no HTTP, no
    database);
  - the disk: the same file operations from 32 threads, without the event loop.

For the Python servers it also reports the CPU time of the worker's main thread (the event
loop, where a request's Python runs) per request. Results go to
bench/results/ceilings-<date>.json.

    .venv/bin/python bench/ceilings.py [--runs 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
from rich.table import Table

import peers
import tools
import workloads as w
from chatmedia.storage.local import LocalBlobStore, _fsync_dir, _make_dirs
from common import (
    BENCH_DIR,
    console,
    create_random_file,
    exit_on_sigterm,
    free_port,
    machine,
    save_json,
    source_state,
    start_process,
    stop,
    wait_for_key,
    wait_http,
    worker_pids,
)

START_TIMEOUT = 60.0
STORE_TASKS = 32  # as many as W3's connections


@dataclass(frozen=True, slots=True)
class Granian:
    """A granian server started by this benchmark."""

    process: subprocess.Popen[bytes]
    address: tuple[str, int]
    key: str | None

    def main_thread_seconds(self) -> float:
        """CPU seconds of the main threads (event loops) of the workers."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in worker_pids(self.process.pid):
            stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total


@contextmanager
def granian(workdir: Path, target: str, workers: int, chatmedia: bool) -> Iterator[Granian]:
    """granian serving `target` of ceiling_apps with `workers` workers; with `chatmedia`,
    the target is a factory building chatmedia's app on a fresh data folder."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMEDIA_")}
    env |= {"PYTHONPATH": str(BENCH_DIR), "PYTHONUNBUFFERED": "1"}
    if chatmedia:
        env |= {
            "CHATMEDIA_DATA_DIR": str(workdir / "data"),
            "CHATMEDIA_MAX_UPLOAD_SIZE": peers.MAX_UPLOAD,
            "MALLOC_ARENA_MAX": "2",  # as `chatmedia serve` sets it
        }
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--no-ws"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--runtime-threads", "2", "--log-level", "warning"]
    command += ["--factory", f"ceiling_apps:{target}"] if chatmedia else [f"ceiling_apps:{target}"]
    workdir.mkdir(parents=True)
    log = workdir / "server.log"
    process = start_process(command, workdir, env, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        key = wait_for_key(process, log, deadline) if chatmedia else None
        wait_http(process, f"http://127.0.0.1:{port}/healthz", log, deadline)
        yield Granian(process, ("127.0.0.1", port), key)
    finally:
        stop(process)


# --- the measurements -------------------------------------------------------------------


def wrk_case(
    server: Granian | None,
    address: tuple[str, int],
    target: str,
    connections: int,
    duration: float,
    args: list[str],
    headers: dict[str, str],
) -> dict[str, float]:
    """One wrk run; requests/s, p99 and, for a granian server, event-loop ms per request."""
    before = server.main_thread_seconds() if server else 0.0
    figures = w.run_wrk(address, target, connections, duration, args, headers)
    after = server.main_thread_seconds() if server else 0.0
    if sum(figures["errors"].values()):
        raise RuntimeError(f"wrk errors against {target}: {figures['errors']}")
    requests = figures["requests"]
    result = {
        "per_s": round(requests / (figures["duration_us"] / 1e6), 1),
        "p99_ms": round(figures["latency_us"]["p99"] / 1000, 2),
    }
    if server:
        result["loop_ms_per_request"] = round((after - before) / max(1, requests) * 1000, 3)
    return result


def upload_args(path: str) -> list[str]:
    """wrk.lua's arguments for W3's multipart uploads to `path`."""
    return ["upload", "POST", path, "1", str(w.UPLOAD_FILE), secrets.token_hex(6)]


def store_rate(root: Path, duration: float) -> dict[str, float]:
    """Files/s through LocalBlobStore.put and promote from STORE_TASKS tasks."""
    store = LocalBlobStore(root)
    stored = 0

    async def one(task: int, stop_at: float) -> None:
        nonlocal stored
        body = os.urandom(w.UPLOAD_FILE)
        while time.monotonic() < stop_at:
            data = f"{task}-{stored}-{secrets.token_hex(4)}".encode().ljust(48) + body[48:]
            staged = await store.put(_once(data))
            await store.promote(staged)
            stored += 1

    async def main() -> float:
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            for task in range(STORE_TASKS):
                tasks.start_soon(one, task, started + duration)
        return time.monotonic() - started

    elapsed = anyio.run(main)
    return {"per_s": round(stored / elapsed, 1)}


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def disk_rate(root: Path, duration: float) -> dict[str, float]:
    """Files/s for the local store's file operations from STORE_TASKS threads: a 100 KiB
    file written to staging, fsynced, renamed under `ab/cd/` of its SHA-256 (folders
    created and their parents fsynced as needed, by the store's own helpers), and its
    folder fsynced."""
    staging = root / ".staging"
    staging.mkdir(parents=True)
    counts = [0] * STORE_TASKS
    stop_at = time.monotonic() + duration

    def work(thread: int) -> None:
        body = os.urandom(w.UPLOAD_FILE)
        while time.monotonic() < stop_at:
            data = f"{thread}-{counts[thread]}".encode().ljust(48) + body[48:]
            key = hashlib.sha256(data).hexdigest()
            staged = staging / f"{thread}-{counts[thread]}"
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            folder = root / key[:2] / key[2:4]
            _make_dirs(folder, root)
            os.replace(staged, folder / key)
            _fsync_dir(folder)
            counts[thread] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(STORE_TASKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"per_s": round(sum(counts) / (time.monotonic() - started), 1)}


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every case (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case (10)")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    tools.ensure_apt_packages()
    started = datetime.now(UTC)
    results: dict[str, list[dict[str, float]]] = {}
    temp = tempfile.TemporaryDirectory(prefix="chatmedia-ceilings-", dir=args.tmp_dir)
    # The servers stop (the stack) before their folders go (the temporary directory).
    with temp as tmp, ExitStack() as stack:
        cases = setup_cases(Path(tmp), args.duration, stack)
        for run in range(args.runs):
            order = list(cases)
            shift = run % len(order)
            for name in order[shift:] + order[:shift]:
                figures = cases[name](run)
                results.setdefault(name, []).append(figures)
                console.print(f"run {run + 1} {name:<30} {figures}")
    document = {
        "benchmark": "ceilings",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine(),
        "source": source_state(),
        "settings": {"runs": args.runs, "duration_s": args.duration},
        "results": results,
    }
    print_table(results)
    console.print(f"results: {save_json('ceilings', document)}")


def setup_cases(
    root: Path, duration: float, stack: ExitStack
) -> dict[str, Callable[[int], dict[str, float]]]:
    """Start the servers, store the 64 KiB file where it is downloaded from, and return the
    cases by name."""
    small = root / "small.bin"
    create_random_file(small, w.SMALL_FILE)
    sha256 = peers.sha256_of(small)
    nginx = stack.enter_context(peers.nginx(root / "nginx-peer"))
    on_nginx = nginx.upload(small, sha256)
    bare_1 = stack.enter_context(granian(root / "bare-1", "bare_64k", 1, chatmedia=False))
    bare_2 = stack.enter_context(granian(root / "bare-2", "bare_64k", 2, chatmedia=False))
    app = stack.enter_context(granian(root / "chatmedia", "read_form_app", 1, chatmedia=True))
    assert app.key is not None
    auth = {"Authorization": f"Bearer {app.key}"}
    data = root / "chatmedia" / "data"
    on_chatmedia = peers.Chatmedia(app.process.pid, data, app.address, app.key).upload(
        small, sha256
    )
    w2, w3 = w.W2_CONNECTIONS, w.W3_CONNECTIONS
    return {
        "W2 nginx": lambda _: wrk_case(
            None, nginx.address, on_nginx.download_path, w2, duration, ["get"], {}
        ),
        "W2 bare ASGI, 1 worker": lambda _: wrk_case(
            bare_1, bare_1.address, "/", w2, duration, ["get"], {}
        ),
        "W2 bare ASGI, 2 workers": lambda _: wrk_case(
            bare_2, bare_2.address, "/", w2, duration, ["get"], {}
        ),
        "W2 chatmedia": lambda _: wrk_case(
            app, app.address, on_chatmedia.download_path, w2, duration, ["get"], auth
        ),
        "W3 chatmedia, form read only": lambda _: wrk_case(
            app,
            app.address,
            "/bench/read-form",
            w3,
            duration,
            upload_args("/bench/read-form"),
            auth,
        ),
        "W3 chatmedia": lambda _: wrk_case(
            app, app.address, "/v1/files", w3, duration, upload_args("/v1/files"), auth
        ),
        "W3 local store alone": lambda run: store_rate(root / f"store-{run}", duration),
        "W3 disk, 32 threads": lambda run: disk_rate(root / f"disk-{run}", duration),
    }


def print_table(results: dict[str, list[dict[str, float]]]) -> None:
    """Medians and min-max of every case, and W2's ratios to nginx in the same run."""
    table = Table(title="Ceilings (median, min-max)")
    for column in ("case", "per second", "event loop ms/request", "x nginx (W2)"):
        table.add_column(column)
    nginx = [r["per_s"] for r in results.get("W2 nginx", [])]
    for name, runs in results.items():
        rates = [r["per_s"] for r in runs]
        loop = [r["loop_ms_per_request"] for r in runs if "loop_ms_per_request" in r]
        ratio = ""
        if name.startswith("W2") and name != "W2 nginx" and nginx:
            ratios = [rate / ref for rate, ref in zip(rates, nginx, strict=False)]
            ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        table.add_row(
            name,
            f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
            f"{statistics.median(loop):.3f}" if loop else "",
            ratio,
        )
    console.print(table)


if __name__ == "__main__":
    main()
