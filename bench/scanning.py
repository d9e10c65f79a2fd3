"""How long malware scanning makes an upload wait, and a file wait for `clean`.

Three chatmedia servers, each with its own data folder, the last two scanning with the
same clamd (bench/scan_peer.py: Debian's clamd with a signature database of two
signatures, on the same two cores), all on 127.0.0.1:

- clamd alone: INSTREAM scans of 1 byte, 100 KiB and 5 MB, one at a time over its Unix
  socket (framed as chatmedia frames them): the wall time and clamd's CPU time per scan;
- inline: uploads of 5 MB (5,000,000 bytes) and of 100 KiB (five times as many), each of
  new random bytes, to the server with scanning off and to the one with scanning on (the
  upload waits up to CHATMEDIA_SCAN_INLINE_TIMEOUT, 5 s by default), in turns. Each is
  timed from connecting to the whole answer, which with scanning must say `clean`: the
  difference is what the scan adds;
- through the job: 5 MB uploads to a server whose inline timeout is 1 ms (the setting
  refuses 0), which answer `pending`; the delay runs from the 201 to the `file.updated`
  event saying `clean` on the conversation's event stream, read by a client connected
  before the uploads. The stream rather than a GET /v1/files/{id} every 10 ms: the job runs
  in the worker that serves the stream and wakes it as its result commits, so the event
  leaves at once, where polling would add up to 10 ms and a request every 10 ms of load.

One upload at a time: these are delays, not throughput (W3 with scanning, in
bench/run.py, is that). Raw figures go to bench/results/scanning-<date>.json.

    .venv/bin/python bench/scanning.py [--uploads 20] [--at-commit HEAD]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

import scan_peer
import tools
from client import Body, multipart_file, request
from common import (
    MB,
    console,
    cpu_seconds,
    create_random_file,
    exit_on_sigterm,
    export_source,
    filesystem_of,
    machine,
    save_json,
    source_state,
    suspicious_lines,
)
from peers import Chatmedia, chatmedia
from run import LIMITS_NEVER_REACHED, wait_for_quiet
from scan_peer import Clamd
from sse import EventFollower

SIZES = {"100 KiB": 100 * 1024, "5 MB": 5 * MB}
# Inline uploads of each size per --uploads: a 100 KiB upload's CPU time is under a tick of
# /proc's 10 ms, so more of them make its figure steadier.
UPLOADS_FACTOR = {"100 KiB": 5, "5 MB": 1}
JOB_SIZE = "5 MB"
CLAMD_SIZES = {"1 B": 1, **SIZES}
CLAMD_SCANS = {"1 B": 200, "100 KiB": 200, "5 MB": 20}
CONVERSATION = "bench-scanning"
JOB_INLINE_TIMEOUT = "0.001"  # seconds: the least CHATMEDIA_SCAN_INLINE_TIMEOUT takes
EVENT_TIMEOUT = 60.0  # seconds a job's `clean` may take before the run fails
INSTREAM_PIECE = 256 * 1024  # chatmedia's frame size (chatmedia.scanning.clamd.MAX_CHUNK)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=20, help="uploads of each kind (20)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 uploads of each")
    parser.add_argument(
        "--at-commit", metavar="REV", default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )  # fmt: skip
    parser.add_argument(
        "--wait-load", type=float, default=0.5,
        help="wait until the 1-minute load average is below this (0.5; 0 to skip)",
    )  # fmt: skip
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    if args.quick:
        args.uploads = 3
    if args.uploads < 1:
        parser.error("--uploads must be at least 1")
    return args


# --- figures --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def spread_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, min and max of some durations, in ms."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


# --- clamd alone ----------------------------------------------------------------------------


def instream(data: bytes) -> bytes:
    """An INSTREAM request for `data`, in frames of INSTREAM_PIECE bytes."""
    frames = [b"zINSTREAM\0"]
    for start in range(0, len(data), INSTREAM_PIECE):
        piece = data[start : start + INSTREAM_PIECE]
        frames.append(struct.pack(">I", len(piece)) + piece)
    return b"".join([*frames, bytes(4)])


def ask_clamd(clamd: Clamd, body: bytes) -> str:
    """clamd's reply to one request (a whole z-command), over its Unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(EVENT_TIMEOUT)
        s.connect(str(clamd.socket_path))
        s.sendall(body)
        reply = b""
        while not reply.endswith(b"\0"):
            data = s.recv(4096)
            if not data:
                break
            reply += data
    return reply.rstrip(b"\0").decode(errors="replace")


def clamd_alone(clamd: Clamd) -> dict[str, Any]:
    """Scans of each size, one at a time, each of new random bytes (so that clamd's cache of
    verdicts never answers): wall time per scan, and clamd's CPU time per scan."""
    results = {}
    for label, size in CLAMD_SIZES.items():
        requests = [instream(os.urandom(size)) for _ in range(CLAMD_SCANS[label])]
        walls = []
        cpu_before = cpu_seconds([clamd.pid])
        for body in requests:
            started = time.perf_counter()
            reply = ask_clamd(clamd, body)
            walls.append(time.perf_counter() - started)
            if reply != "stream: OK":
                raise RuntimeError(f"clamd answered {reply!r} to {label} of random bytes")
        cpu = cpu_seconds([clamd.pid]) - cpu_before
        results[label] = spread_ms(walls) | {
            "clamd_cpu_ms_per_scan": round(cpu * 1000 / len(walls), 2)
        }
    return results


# --- uploads --------------------------------------------------------------------------------


def upload(peer: Chatmedia, path: Path) -> tuple[float, float, dict[str, Any]]:
    """POST `path` to /v1/files in CONVERSATION; returns when the request started and when
    its answer was whole (time.perf_counter), and the File."""
    boundary = secrets.token_hex(16)
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="conversationId"\r\n\r\n'
        f"{CONVERSATION}\r\n"
    ).encode()
    file = multipart_file(path, boundary, path.name)
    headers = {**peer.upload_auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    started = time.perf_counter()
    response = request(
        peer.address, "POST", "/v1/files", headers, Body(part + file.prefix, path, file.suffix)
    )
    answered = time.perf_counter()
    if response.status != 201:
        raise RuntimeError(
            f"{peer.name}: upload answered {response.status}: {response.body[:300]!r}"
        )
    record: dict[str, Any] = response.json()
    return started, answered, record


def scan_status(record: dict[str, Any]) -> str | None:
    """A File's scan status (None without scanning)."""
    scan = record.get("scan")
    return scan["status"] if scan else None


def fresh_file(workdir: Path, size: int) -> Path:
    """A file of `size` new random bytes (nothing of it stored before)."""
    path = workdir / f"upload-{secrets.token_hex(4)}.bin"
    create_random_file(path, size)
    return path


def inline(off: Chatmedia, on: Chatmedia, workdir: Path, size: int, uploads: int) -> dict[str, Any]:
    """`uploads` uploads of `size` bytes to each server, in turns (which goes first
    alternating): response times, and the CPU time per upload of each server's worker and
    of clamd."""
    times: dict[str, list[float]] = {off.name: [], on.name: []}
    worker_cpu = dict.fromkeys(times, 0.0)
    clamd_cpu = dict.fromkeys(times, 0.0)
    statuses: dict[str, dict[str, int]] = {name: {} for name in times}
    for peer in (off, on):  # one untimed upload each: connections and caches warm
        path = fresh_file(workdir, size)
        upload(peer, path)
        path.unlink()
    for n in range(uploads):
        for peer in (off, on) if n % 2 == 0 else (on, off):
            path = fresh_file(workdir, size)
            os.sync()  # the file just written is not the upload's fsync to pay for
            workers = peer.memory_pids()
            cpu_before = cpu_seconds(workers), cpu_seconds(on.helper_pids)
            started, answered, record = upload(peer, path)
            worker_cpu[peer.name] += cpu_seconds(workers) - cpu_before[0]
            clamd_cpu[peer.name] += cpu_seconds(on.helper_pids) - cpu_before[1]
            times[peer.name].append(answered - started)
            status = str(scan_status(record))
            statuses[peer.name][status] = statuses[peer.name].get(status, 0) + 1
            path.unlink()
    result: dict[str, Any] = {"size": size}
    for name, seconds in times.items():
        result[name] = spread_ms(seconds) | {
            "worker_cpu_ms_per_upload": round(worker_cpu[name] * 1000 / uploads, 1),
            "clamd_cpu_ms_per_upload": round(clamd_cpu[name] * 1000 / uploads, 1),
            "scan_statuses": statuses[name],
            "seconds": [round(s, 4) for s in seconds],
        }
    for p in ("p50_ms", "p95_ms"):
        result[f"added_{p}"] = round(result[on.name][p] - result[off.name][p], 1)
    if statuses[on.name] != {"clean": uploads}:
        result["note"] = f"not every scanned upload was answered clean: {statuses[on.name]}"
    return result


class CleanEvents(EventFollower[float]):
    """Notes when each file's `file.updated` saying `clean` arrives."""

    def __init__(self, peer: Chatmedia) -> None:
        super().__init__(peer.address, dict(peer.upload_auth), CONVERSATION)

    def note(self, event: str, file: dict[str, Any], at: float) -> float | None:
        return at if event == "file.updated" and scan_status(file) == "clean" else None

    def wait_for(self, file_id: str, timeout: float) -> float | None:
        """When the file's `clean` arrived, waiting for it up to `timeout` seconds."""
        self.wait_all({file_id}, timeout)
        return self.arrived.get(file_id)


def through_job(peer: Chatmedia, workdir: Path, size: int, uploads: int) -> dict[str, Any]:
    """`uploads` uploads answered `pending`; the delay from each 201 to its `clean` event,
    then a check that GET /v1/files/{id} says `clean` too."""
    delays: list[float] = []
    answers: dict[str, int] = {}
    with CleanEvents(peer) as events:
        for n in range(uploads + 1):  # the first, untimed, shows that the stream works
            path = fresh_file(workdir, size)
            os.sync()
            _, answered, record = upload(peer, path)
            path.unlink()
            clean_at = events.wait_for(record["id"], EVENT_TIMEOUT)
            if clean_at is None:
                raise RuntimeError(f"no clean event for {record['id']} ({events.error})")
            check = request(peer.address, "GET", f"/v1/files/{record['id']}", peer.upload_auth)
            if scan_status(check.json()) != "clean":
                raise RuntimeError(f"{record['id']}: event said clean, GET says {check.body!r}")
            if n:
                delays.append(clean_at - answered)
                status = str(scan_status(record))
                answers[status] = answers.get(status, 0) + 1
    result = spread_ms(delays) | {
        "size": size,
        "answered": answers,
        "seconds": [round(s, 4) for s in delays],
    }
    if answers != {"pending": uploads}:
        result["note"] = f"not every upload was answered pending: {answers}"
    return result


# --- the run --------------------------------------------------------------------------------


@contextmanager
def servers(workdir: Path, source: Path | None) -> Iterator[tuple[Clamd, list[Chatmedia]]]:
    """clamd, then chatmedia with scanning off, on, and left to the job; all stopped at the
    end, whatever happens."""
    settings = {"CHATMEDIA_" + k.upper(): v for k, v in LIMITS_NEVER_REACHED.items()}
    with ExitStack() as stack:
        clamd = stack.enter_context(scan_peer.clamd(workdir))
        (workdir / "off").mkdir()
        off = stack.enter_context(chatmedia(workdir / "off", None, source, settings))
        on = stack.enter_context(scan_peer.chatmedia_scan(workdir, clamd, None, source, settings))
        job_settings = settings | {"CHATMEDIA_SCAN_INLINE_TIMEOUT": JOB_INLINE_TIMEOUT}
        job = scan_peer.chatmedia_scan(
            workdir, clamd, None, source, job_settings, "chatmedia-scan-job"
        )
        yield clamd, [off, on, stack.enter_context(job)]


def main() -> None:
    """Start, measure, report, save."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    quiet = wait_for_quiet(args.wait_load, 300.0)
    source = None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state()
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="chatmedia-scanning-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        with servers(workdir, source) as (clamd, (off, on, job)):
            console.print(f"clamd {clamd.version}; servers up")
            alone = clamd_alone(clamd)
            console.print(f"clamd alone: {alone}", highlight=False)
            inline_results = {}
            for label, size in SIZES.items():
                count = args.uploads * UPLOADS_FACTOR[label]
                inline_results[label] = inline(off, on, workdir, size, count)
                console.print(f"inline {label}: done", highlight=False)
            job_result = through_job(job, workdir, SIZES[JOB_SIZE], args.uploads)
            warnings = {
                p.name: suspicious_lines(p.data_dir.parent / "server.log") for p in (off, on, job)
            }
        document = {
            "benchmark": "scanning",
            "date": started_at.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, *sys.argv],
            "machine": machine(),
            "load": quiet | {"loadavg_at_end": list(os.getloadavg())},
            "source": code,
            "tools": {"clamd": clamd.version},
            "data_filesystem": filesystem_of(workdir),
            "settings": {
                "uploads": args.uploads,
                "clamd_transport": "unix",
                "job_inline_timeout_s": float(JOB_INLINE_TIMEOUT),
            },
            "units": {"time": "ms", "size": "bytes, 1 MB = 10^6 bytes"},
            "clamd_alone": alone,
            "inline": inline_results,
            "through_job": job_result,
            "chatmedia_log_warnings": warnings,
        }
    saved = save_json("scanning", document)
    print_report(document)
    console.print(f"raw results: {saved}")


def print_report(document: dict[str, Any]) -> None:
    """The figures, for the terminal."""
    table = Table(title="clamd alone, one scan at a time (Unix socket)")
    for column in ("content", "p50 ms", "p95 ms", "clamd CPU ms/scan"):
        table.add_column(column, justify="right")
    for label, r in document["clamd_alone"].items():
        table.add_row(label, f"{r['p50_ms']}", f"{r['p95_ms']}", f"{r['clamd_cpu_ms_per_scan']}")
    console.print(table)
    table = Table(title="upload answered, one at a time (ms)")
    for column in ("size", "server", "p50", "p95", "worker CPU/upload", "clamd CPU/upload"):
        table.add_column(column, justify="right")
    for label, r in document["inline"].items():
        for name in ("chatmedia", scan_peer.SCAN):
            x = r[name]
            cpu = (x["worker_cpu_ms_per_upload"], x["clamd_cpu_ms_per_upload"])
            table.add_row(label, name, *(str(v) for v in (x["p50_ms"], x["p95_ms"], *cpu)))
        table.add_row(
            label, "added by the scan", f"{r['added_p50_ms']}", f"{r['added_p95_ms']}", "", ""
        )
    console.print(table)
    j = document["through_job"]
    console.print(
        f"through the job, {j['size']:,} bytes: from the 201 to `clean` p50 {j['p50_ms']} ms, "
        f"p95 {j['p95_ms']} ms (min {j['min_ms']}, max {j['max_ms']}; answered {j['answered']})",
        highlight=False,
    )


if __name__ == "__main__":
    main()
