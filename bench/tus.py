"""W10: a large upload through tus, chatmedia against @tus/server (the tus project's Node
server, from npm), on two backends in the same run:

- local: chatmedia on SQLite and local disk, @tus/server on its file store;
- s3: chatmedia on PostgreSQL and SeaweedFS, @tus/server on its S3 store, on the same
  SeaweedFS (`weed mini`, as the tests start it).

One Python client for every server: creation (no body), then PATCHes of 8 MiB
(application/offset+octet-stream) whose bytes leave with `socket.sendfile()` from a slice of
the source file, over one kept-alive connection. Each run gives the file new first bytes
(no deduplication) and uploads it to every server, in an order that rotates from run to
run, after an `os.sync()` (the last server's unwritten bytes are not the next one's to
flush). Throughput runs from the creation request to the last PATCH's answer (MB/s, 1 MB
= 10^6 bytes); for chatmedia that answer comes once the File is stored and its SHA-256
computed. Meanwhile the RSS of each server's process tree is sampled every 20 ms, and the
CPU time of the server, of the helpers (SeaweedFS, PostgreSQL) and of every other process
on the machine is read from /proc. Untimed, after each upload: chatmedia's File must have
the source's size and SHA-256; @tus/server's upload, read back with GET, must hash to it.
Then the upload is deleted.

The issue asks chatmedia for at least 1.5x @tus/server's MB/s on each backend; the ratio is
taken within each run and its median reported. Raw figures go to bench/results/tus-<date>.json.
@tus/server is installed on first use with `npm ci --prefix bench/tus_peer` (pinned in
bench/tus_peer/package-lock.json).

    .venv/bin/python bench/tus.py [--size-mib 256] [--runs 3] [--backends local,s3]
                                  [--at-commit REV] [--profile]

`--profile` adds one chatmedia upload per backend with py-spy attached to its worker (not
part of the figures): the heaviest frames and each thread's CPU time go to the JSON.
Linux only: it reads /proc.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import tools
from common import (
    MB,
    MIB,
    RssSampler,
    console,
    cpu_seconds,
    create_random_file,
    exit_on_sigterm,
    export_source,
    filesystem_of,
    foreign_cpu_seconds,
    machine,
    save_json,
    source_state,
    suspicious_lines,
    worker_pids,
)
from profile_worker import cpu_by_name, summarize, thread_cpu
from tus_parts import (
    TusPeer,
    disk_free_gib,
    ensure_peer_packages,
    helper_cpu,
    peers,
    sha256_of,
    tus_upload,
)

REQUIRED = 1.5  # chatmedia's MB/s over @tus/server's, on each backend (issue 18)
BACKENDS = ("local", "s3")
PROFILE_RATE = 250  # py-spy samples per second: an upload lasts a second or two


@dataclass(frozen=True, slots=True)
class Sample:
    """One upload to one server."""

    server: str
    backend: str
    run: int
    bytes: int
    seconds: float
    mb_per_s: float
    creation_ms: float
    patch_p50_ms: float  # a PATCH's answer, the last one left out
    last_patch_ms: float  # chatmedia: with the File made from the pieces
    server_cpu_s: float
    helper_cpu_s: float  # SeaweedFS and PostgreSQL (s3), whichever server they served
    peak_rss_mib: float  # the sampled sum over the server's process tree
    vm_hwm_mib: float
    hwm_reset: bool
    foreign_cpu_s: float
    foreign_cores: float
    check: dict[str, Any]
    patch_ms: list[float] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="file size (256)")
    parser.add_argument("--chunk-mib", type=int, default=8, help="PATCH size (8)")
    parser.add_argument("--runs", type=int, default=3, help="uploads to each server (3)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="local,s3 (both)")
    parser.add_argument(
        "--at-commit",
        metavar="REV",
        default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )
    parser.add_argument("--profile", action="store_true", help="then profile chatmedia (py-spy)")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    if not args.backends or set(args.backends) - set(BACKENDS):
        parser.error(f"--backends takes {', '.join(BACKENDS)}")
    if args.size_mib < 1 or args.runs < 1 or args.chunk_mib < 1:
        parser.error("--size-mib, --chunk-mib and --runs must be at least 1")
    return args


def make_distinct(path: Path) -> str:
    """New first bytes (no server may deduplicate a run); the file's SHA-256, untimed."""
    with path.open("r+b") as f:
        f.write(os.urandom(16))
    return sha256_of(path)


def measure(
    peer: TusPeer, every: list[TusPeer], path: Path, sha256: str, chunk: int, run: int
) -> Sample:
    """Upload `path` to `peer` under the clock and the samplers, then check what it kept."""
    os.sync()
    pids = peer.tree()
    with RssSampler(pids) as sampler:
        before = cpu_seconds(pids), helper_cpu(every), foreign_cpu_seconds()
        upload = tus_upload(peer.address, peer.endpoint, peer.auth, path, chunk)
        after = cpu_seconds(pids), helper_cpu(every), foreign_cpu_seconds()
    size = path.stat().st_size
    seconds = upload.patches[-1] - upload.started
    # PostgreSQL is not below this process: its CPU would count as another's.
    foreign = (after[2] - before[2]) - (after[1][1] - before[1][1])
    answers = [upload.created, *upload.patches]
    patch_ms = [round((b - a) * 1000, 1) for a, b in itertools.pairwise(answers)]
    return Sample(
        server=peer.name,
        backend=peer.backend,
        run=run,
        bytes=size,
        seconds=round(seconds, 4),
        mb_per_s=round(size / seconds / MB, 1),
        creation_ms=round((upload.created - upload.started) * 1000, 1),
        patch_p50_ms=statistics.median(patch_ms[:-1] or patch_ms),
        last_patch_ms=patch_ms[-1],
        server_cpu_s=round(after[0] - before[0], 2),
        helper_cpu_s=round(after[1][0] - before[1][0], 2),
        peak_rss_mib=round(sampler.peak_kib / 1024, 1),
        vm_hwm_mib=round(sampler.hwm_kib / 1024, 1),
        hwm_reset=sampler.hwm_reset,
        foreign_cpu_s=round(max(foreign, 0.0), 2),
        foreign_cores=round(max(foreign, 0.0) / seconds, 2),
        check=peer.check(upload, size, sha256),
        patch_ms=patch_ms,
    )


def summarize_runs(samples: list[Sample], backends: list[str]) -> dict[str, Any]:
    """Per backend: each server's median MB/s and peak RSS, and chatmedia's ratio to
    @tus/server taken within each run."""
    summary: dict[str, Any] = {}
    for backend in backends:
        mine = [s for s in samples if s.backend == backend]
        by: dict[str, list[Sample]] = {}
        for s in mine:
            by.setdefault(s.server, []).append(s)
        servers = {
            name: {
                "mb_per_s_p50": statistics.median(s.mb_per_s for s in ss),
                "mb_per_s_min": min(s.mb_per_s for s in ss),
                "mb_per_s_max": max(s.mb_per_s for s in ss),
                "peak_rss_mib": max(s.peak_rss_mib for s in ss),
                "server_cpu_s_p50": statistics.median(s.server_cpu_s for s in ss),
                "helper_cpu_s_p50": statistics.median(s.helper_cpu_s for s in ss),
                "last_patch_ms_p50": statistics.median(s.last_patch_ms for s in ss),
                "patch_ms_p50": statistics.median(s.patch_p50_ms for s in ss),
                "foreign_cores_max": max(s.foreign_cores for s in ss),
            }
            for name, ss in by.items()
        }
        runs = {s.run for s in mine}
        speed = {(s.server, s.run): s.mb_per_s for s in mine}
        ratios = [speed["chatmedia", r] / speed["@tus/server", r] for r in sorted(runs)]
        ratio = statistics.median(ratios)
        summary[backend] = {
            "servers": servers,
            "ratio_per_run": [round(r, 2) for r in ratios],
            "ratio_p50": round(ratio, 2),
            "required": REQUIRED,
            "met": ratio >= REQUIRED,
        }
    return summary


def report(summary: dict[str, Any], size: int, chunk: int) -> Table:
    """The table for the terminal."""
    table = Table(
        title=f"W10: {size / MIB:g} MiB through tus in {chunk / MIB:g} MiB PATCHes",
        caption="MB/s = 10^6 bytes/s, from creation to the last PATCH's answer (chatmedia: "
        "File stored, SHA-256 computed); RSS: the server's process tree, MiB",
    )
    columns = (
        "backend",
        "server",
        "MB/s p50",
        "min-max",
        "peak RSS",
        "server CPU s",
        "PATCH ms p50",
        "last PATCH ms",
        "others' cores",
        "ratio",
        "required",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("backend", "server") else "right")
    for backend, b in summary.items():
        for name, s in b["servers"].items():
            mine = name == "chatmedia"
            verdict = ("[green]met[/green]" if b["met"] else "[red]not met[/red]") if mine else ""
            table.add_row(
                backend,
                name,
                f"{s['mb_per_s_p50']:.0f}",
                f"{s['mb_per_s_min']:.0f}-{s['mb_per_s_max']:.0f}",
                f"{s['peak_rss_mib']:.1f}",
                f"{s['server_cpu_s_p50']:.2f}",
                f"{s['patch_ms_p50']:.0f}",
                f"{s['last_patch_ms_p50']:.0f}",
                f"{s['foreign_cores_max']:.2f}",
                f"{b['ratio_p50']:.2f}x" if mine else "",
                f"≥ {REQUIRED}x {verdict}" if mine else "",
            )
    return table


def profile(every: list[TusPeer], path: Path, chunk: int) -> dict[str, Any]:
    """One upload to each chatmedia with py-spy sampling its worker's Python stacks (idle
    threads left out), and each of the worker's threads' CPU time."""
    py_spy = tools.ensure_py_spy()
    out = tools.WORK_DIR / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    results = {}
    for peer in (p for p in every if p.is_chatmedia):
        sha256 = make_distinct(path)
        os.sync()
        worker = worker_pids(peer.pid)[0]
        raw = out / f"{stamp}-tus-{peer.backend}.txt"
        command = [
            str(py_spy),
            "record",
            "--nonblocking",
            "--function",
            "--rate",
            str(PROFILE_RATE),
            "--format",
            "raw",
            "--pid",
            str(worker),
            "--output",
            str(raw),
        ]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # py-spy attaches
            threads = thread_cpu(worker)
            upload = tus_upload(peer.address, peer.endpoint, peer.auth, path, chunk)
            threads = cpu_by_name(threads, thread_cpu(worker))
        finally:
            spy.send_signal(signal.SIGINT)  # it writes its output on Ctrl-C
            spy.wait(60)
        peer.check(upload, path.stat().st_size, sha256)
        answers = [upload.created, *upload.patches]
        results[peer.backend] = {
            "seconds_under_profiler": round(upload.patches[-1] - upload.started, 3),
            "last_patch_ms": round((answers[-1] - answers[-2]) * 1000, 1),
            "thread_cpu_s": threads,
            "collapsed_stacks": str(raw),
        } | (summarize(raw.read_text().splitlines()) if raw.exists() else {})
        console.print(f"profiled chatmedia ({peer.backend}): CPU by thread {threads}")
        for frame, share in results[peer.backend].get("self_percent", [])[:10]:
            console.print(f"  {share:5.1f} %  {frame}", highlight=False, markup=False)
    return results


def main() -> None:
    """Install, start, measure, report, save."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    versions = ensure_peer_packages()
    source = None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state()
    size, chunk = args.size_mib * MIB, args.chunk_mib * MIB
    started_at = datetime.now(UTC)
    samples: list[Sample] = []
    profiled: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chatmedia-tus-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        if disk_free_gib(workdir) < 4 * size / 1024**3 + 2:
            raise SystemExit(f"not enough free space in {workdir} for {args.size_mib} MiB uploads")
        payload = workdir / "payload.bin"
        create_random_file(payload, size)
        with peers(workdir, args.backends, source) as every:
            console.print("up: " + ", ".join(f"{p.label} pid {p.pid}" for p in every))
            for run in range(1, args.runs + 1):
                sha256 = make_distinct(payload)
                shift = (run - 1) % len(every)
                for peer in every[shift:] + every[:shift]:
                    sample = measure(peer, every, payload, sha256, chunk, run)
                    samples.append(sample)
                    console.print(
                        f"run {run} {peer.label:<26} {sample.mb_per_s:7.1f} MB/s, "
                        f"RSS {sample.peak_rss_mib:6.1f} MiB, "
                        f"last PATCH {sample.last_patch_ms:6.0f} ms, "
                        f"others {sample.foreign_cores:.2f} cores",
                        highlight=False,
                    )
            if args.profile:
                profiled = profile(every, payload, chunk)
            warnings = {p.label: suspicious_lines(workdir / log) for p, log in logs(every)}
        summary = summarize_runs(samples, args.backends)
        document = {
            "benchmark": "tus",
            "date": started_at.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, *sys.argv],
            "machine": machine(),
            "loadavg_at_end": list(os.getloadavg()),
            "source": code,
            "tools": versions,
            "data_filesystem": filesystem_of(workdir),
            "settings": {
                "size_bytes": size,
                "chunk_bytes": chunk,
                "runs": args.runs,
                "chatmedia_workers": 1,
                "required_ratio": REQUIRED,
            },
            "units": {"throughput": "MB/s, 1 MB = 10^6 bytes", "memory": "MiB", "time": "ms"},
            "summary": summary,
            "samples": [asdict(s) for s in samples],
            "profile": profiled,
            "log_warnings": warnings,
        }
    saved = save_json("tus", document)
    # Wide enough for every column even when the output is not a terminal (80 then).
    Console(width=max(console.width, 150)).print(report(summary, size, chunk))
    for label, lines in warnings.items():
        for line in lines[:5]:
            console.print(f"[yellow]{label} log:[/yellow] {line}", highlight=False)
    console.print(f"raw results: {saved}")


def logs(every: list[TusPeer]) -> list[tuple[TusPeer, str]]:
    """Each server's log, relative to the run's folder."""
    return [
        (
            p,
            f"chatmedia-{p.backend}/server.log"
            if p.is_chatmedia
            else f"tus-{p.backend}/server.log",
        )
        for p in every
    ]


if __name__ == "__main__":
    main()
