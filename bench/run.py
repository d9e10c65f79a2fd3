"""Comparison benchmark: chatmedia against nginx (the ceiling) and Synapse's media repository
on workloads W1-W5 (see bench/workloads.py and docs/benchmarks.md).

It installs what is missing (nginx, wrk and clamd from Debian's packages, Synapse from PyPI
into bench/work/), starts the three servers on 127.0.0.1 in a temporary folder, stores the
test files in each, then runs every workload against every peer, the peers interleaved
within each run (their order rotating from run to run), and reports medians, min-max and
the ratios chatmedia/peer taken within each run, against the issue's targets. Raw figures
go to bench/results/compare-<date>.json. Two more chatmedia servers are peers of one
workload each: `chatmedia-accel` behind nginx (W1) and `chatmedia-scan`, scanning every
upload with a clamd of its own (W3, bench/scan_peer.py).

Run it from the repository root (`make bench` does this):

    .venv/bin/python bench/run.py [--quick] [--only W1,W3] [--runs 5] [--duration 10]

`--profile` instead runs each chosen workload against chatmedia alone with py-spy attached
to its worker, and saves where the time goes (see bench/profile_worker.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peers
import profile_worker
import report
import scan_peer
import tools
import workloads as w
from backends import BACKENDS, backend_settings
from common import (
    MIB,
    console,
    create_random_file,
    exit_on_sigterm,
    export_source,
    filesystem_of,
    foreign_cpu_seconds,
    machine,
    memory_kib,
    private_kib,
    save_json,
    source_state,
    suspicious_lines,
)
from peers import Peer, Stored

LOAD_POLL = 10.0  # seconds between two looks at the load average
FOREIGN_LIMIT = 0.1  # cores other processes may use during a measurement
RETRIES = 2  # times a disturbed measurement is taken again
# The same chatmedia server, downloading without a key: through the file-engine's URL and
# through a File's signed url. They are measured on W2 only.
KEYLESS = ("chatmedia-fe", "chatmedia-signed")
ACCEL = "chatmedia-accel"  # a second chatmedia, behind nginx, sending files through it (W1)
SCAN = scan_peer.SCAN  # a third chatmedia, scanning every upload with a clamd (W3)
QUIET_WAIT = 120.0  # seconds to wait at most for the machine to be quiet
# One key (and one address) sends every request of a workload, thousands a second: the
# limits are checked on every request but set above what the benchmark reaches, so that
# they cost what they cost and refuse nothing (compare with RATE_LIMIT=off).
LIMITS_NEVER_REACHED = {"RATE_LIMIT": "1000000/s", "ANON_RATE_LIMIT": "1000000/s"}


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of every workload (5)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument(
        "--only", default=",".join(w.WORKLOADS), help="workloads, e.g. W1,W3 (W1 = W1x1,W1x8)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 run, 2 s, a 32 MiB large file"
    )
    parser.add_argument("--peers", default=f"chatmedia,nginx,synapse,{SCAN}", help="peers to start")
    parser.add_argument("--chatmedia-workers", type=int, default=None, help="CHATMEDIA_WORKERS")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=BACKENDS[0],
        help="chatmedia's database and blob store (sqlite-local; postgresql-s3 starts both)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.5,
        help="wait until the 1-minute load average is below this (0.5; 0 to skip)",
    )
    parser.add_argument(
        "--wait-load-max", type=float, default=300.0, help="wait at most this long (300 s)"
    )
    parser.add_argument(
        "--at-commit",
        metavar="REV",
        default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )
    parser.add_argument(
        "--chatmedia-src",
        metavar="DIR",
        type=Path,
        default=None,
        help="run the chatmedia package found in DIR (a changed copy of src/) instead",
    )
    parser.add_argument("--synapse-version", default=tools.SYNAPSE_VERSION)
    parser.add_argument(
        "--synapse-info-logs",
        action="store_true",
        help="keep Synapse's generated logging (INFO, a line per request)",
    )
    parser.add_argument(
        "--no-signed",
        action="store_true",
        help="no W2 through signed URLs (for commits from before they existed)",
    )
    parser.add_argument(
        "--chatmedia-setting",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a CHATMEDIA_* setting for the server, e.g. RATE_LIMIT=off (repeat it)",
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument(
        "--profile", action="store_true", help="profile chatmedia's worker instead (py-spy)"
    )
    parser.add_argument(
        "--profile-peer", choices=("chatmedia", SCAN), default="chatmedia", help="whose worker"
    )
    parser.add_argument(
        "--scan-with", choices=("clamd", "stub"), default="clamd",
        help=f"what {SCAN} scans with: clamd, or a stub that reads but does not scan",
    )  # fmt: skip
    args = parser.parse_args()
    chosen = []
    for name in args.only.upper().split(","):
        expanded = ["W1x1", "W1x8"] if name == "W1" else [name.replace("X", "x")]
        unknown = [n for n in expanded if n not in w.WORKLOADS]
        if unknown:
            parser.error(f"unknown workload {name}; choose from W1, {', '.join(w.WORKLOADS)}")
        chosen += expanded
    args.workloads = list(dict.fromkeys(chosen))
    args.peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    if "chatmedia" not in args.peer_names:
        parser.error("chatmedia is what is measured: keep it in --peers")
    if args.quick:
        args.runs, args.duration = 1, 2.0
    if args.at_commit and args.chatmedia_src:
        parser.error("--at-commit and --chatmedia-src exclude each other")
    if args.chatmedia_src and not (args.chatmedia_src / "chatmedia").is_dir():
        parser.error(f"{args.chatmedia_src} holds no chatmedia package")
    if args.runs < 1 or not 1 <= args.duration <= 600:
        parser.error("--runs must be at least 1 and --duration within 1..600 s")
    args.settings = w.Settings(
        duration=args.duration,
        large_size=(32 if args.quick else 256) * MIB,
        w1_repeat=1 if args.quick else 4,
    )
    return args


def wait_for_quiet(threshold: float, longest: float) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is under `threshold`: another job on
    the machine would take CPU from one peer and not another."""
    started = time.monotonic()
    load = os.getloadavg()[0]
    while threshold > 0 and load >= threshold and time.monotonic() - started < longest:
        console.print(f"load average {load:.2f} ≥ {threshold}: waiting")
        time.sleep(LOAD_POLL)
        load = os.getloadavg()[0]
    waited = time.monotonic() - started
    if threshold > 0 and load >= threshold:
        console.print(f"[yellow]load still {load:.2f} after {waited:.0f} s; going on[/yellow]")
    return {"loadavg_at_start": list(os.getloadavg()), "waited_s": round(waited, 1)}


def idle_memory(peer: Peer) -> float:
    """The peer's summed RSS now, in MiB."""
    return round(sum(memory_kib(pid)["VmRSS"] for pid in peer.memory_pids()) / 1024, 1)


def setup_files(peer_list: list[Peer], files: w.Files) -> dict[str, Any]:
    """Store the large and the small file in every peer, check that each serves them back
    whole, and probe whether each honours Range."""
    probes = {}
    for peer in peer_list:
        stored = {
            "large": w.stored_upload(peer, files.large),
            "small": w.stored_upload(peer, files.small),
        }
        for item in stored.values():
            w.verify_download(peer, item)
        files.stored[peer.name] = stored
        probes[peer.name] = w.probe_range(peer, stored["large"], files.large)
        if peer.honours_range != probes[peer.name]["honoured"]:
            console.print(f"[yellow]{peer.name}: Range probe {probes[peer.name]}[/yellow]")
    return probes


def targets_for(workload: str, peer_list: list[Peer], probes: dict[str, Any]) -> list[Peer]:
    """The peers a workload runs against: the key-less chatmedia URL only for W2, and for W5
    only peers that answered the Range probe with the right 206."""
    chosen = []
    for peer in peer_list:
        if peer.name in KEYLESS and workload != "W2":
            continue
        if peer.name == ACCEL and not workload.startswith("W1"):
            continue
        if peer.name == SCAN and workload != "W3":
            continue
        if workload == "W5" and not probes.get(peer.name, {"honoured": True})["honoured"]:
            continue
        chosen.append(peer)
    return chosen


def run_one(workload: str, peer: Peer, run: int, files: w.Files, settings: w.Settings) -> w.Sample:
    """One measurement of `workload` against `peer`."""
    stored = files.stored.get(peer.name, {})
    body: Callable[[], w.Outcome]
    uploaded: list[Stored] = []
    if workload == "W1x1":
        body = lambda: w.w1(peer, stored["large"], 1, settings.w1_repeat)  # noqa: E731
    elif workload == "W1x8":
        body = lambda: w.w1(peer, stored["large"], w.W1_CLIENTS, 1)  # noqa: E731
    elif workload == "W2":
        body = lambda: w.w2(peer, stored["small"], settings.duration)  # noqa: E731
    elif workload == "W3":
        body = lambda: w.w3(peer, settings.duration)  # noqa: E731
    elif workload == "W4":

        def body() -> w.Outcome:
            outcome, item = w.w4(peer, files.w4)
            uploaded.append(item)
            return outcome
    else:
        body = lambda: w.w5(peer, stored["large"], settings.duration)  # noqa: E731
    if isinstance(peer, peers.Chatmedia) and peer.helper_pids:
        body = scan_peer.counting_helpers(body, peer)
    sample = w.measure(workload, peer, run, body)
    for item in uploaded:
        peer.delete(item)
    return sample


def main() -> None:
    """Install, start, measure, report, save."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    # 1. What the peers and the client need, from Debian and PyPI.
    tools.ensure_apt_packages()
    synapse_python = (
        tools.ensure_synapse(args.synapse_version) if "synapse" in args.peer_names else None
    )
    py_spy = tools.ensure_py_spy() if args.profile else None
    # 2. A quiet machine, and the code to measure (read before the server starts).
    quiet = wait_for_quiet(args.wait_load, args.wait_load_max)
    source = args.chatmedia_src.resolve() if args.chatmedia_src else None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state() | {"chatmedia_src": str(source) if source else None}
    started_at = datetime.now(UTC)
    settings: w.Settings = args.settings
    with tempfile.TemporaryDirectory(prefix="chatmedia-compare-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        # 3. The test files.
        files = w.Files(workdir / "large.bin", workdir / "small.bin", workdir / "w4.bin")
        console.print(f"creating the test files in {workdir}")
        create_random_file(files.large, settings.large_size)
        create_random_file(files.small, w.SMALL_FILE)
        create_random_file(files.w4, settings.large_size)
        with ExitStack() as stack:
            # 4. The servers, each stopped by the ExitStack whatever happens.
            memory: dict[str, dict[str, float]] = {}
            peer_list = start_peers(stack, args, workdir, source, synapse_python, memory)
            # 5. Memory in a fresh process, before any concurrent workload has grown its
            # heap: one large upload first, 8 large downloads once the files are stored.
            cm = peer_list[0]
            assert isinstance(cm, peers.Chatmedia)
            first = [run_one("W4", cm, 0, files, settings)]
            probes = setup_files(peer_list, files)
            first.append(run_one("W1x8", cm, 0, files, settings))
            for sample in first:
                memory["chatmedia"][f"first_{sample.workload}_peak"] = sample.peak_rss_mib
                show(sample)
            if args.profile:
                assert py_spy is not None
                target = next((p for p in peer_list if p.name == args.profile_peer), None)
                assert isinstance(target, peers.Chatmedia), "start it: name it in --peers"
                profile_worker.profile(
                    target, files, settings, args.workloads, py_spy, run_one, code
                )
                return
            # 6. The measurements, peers interleaved within each run.
            warm_up(peer_list, files, settings, args.workloads, probes)
            disturbed: list[w.Sample] = []
            samples = measure_runs(
                peer_list, files, settings, args.workloads, args.runs, probes, disturbed
            )
            time.sleep(2)
            for peer in peer_list:
                if peer.name in memory:
                    memory[peer.name]["idle_end"] = idle_memory(peer)
            scans = {p.name: scan_peer.scan_statuses(p) for p in peer_list if p.name == SCAN}
            warnings = suspicious_lines(workdir / "server.log")
        # 7. The record.
        document = {
            "benchmark": "compare",
            "date": started_at.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, *sys.argv],
            "machine": machine(),
            "load": quiet | {"loadavg_at_end": list(os.getloadavg())},
            "source": code,
            "tools": tools.tool_versions(synapse_python),
            "data_filesystem": filesystem_of(workdir),
            "settings": asdict(settings)
            | {
                "runs": args.runs,
                "chatmedia_workers": args.chatmedia_workers,
                "chatmedia_backend": args.backend,
                "chatmedia_settings": chatmedia_settings(args),
                "synapse_info_logs": args.synapse_info_logs,
                "scan_with": args.scan_with,
            },
            "units": {"throughput": "MB/s, 1 MB = 10^6 bytes", "memory": "MiB", "latency": "ms"},
            "workloads": args.workloads,
            "range_probes": probes,
            "memory": memory,
            "first_samples": [asdict(s) for s in first],
            "chatmedia_log_warnings": warnings,
            "scan_statuses": scans,
            "samples": [asdict(s) for s in samples],
            "disturbed_samples": [asdict(s) for s in disturbed],
        }
    saved = save_json("compare", document)
    report.print_report(document, console)
    console.print(f"raw results: {saved}")


def chatmedia_settings(args: argparse.Namespace) -> dict[str, str]:
    """The CHATMEDIA_* settings the benchmark gives the server (besides the backend's)."""
    chosen = LIMITS_NEVER_REACHED | dict(s.split("=", 1) for s in args.chatmedia_setting)
    return {"CHATMEDIA_" + name.upper(): value for name, value in chosen.items()}


def start_peers(
    stack: ExitStack,
    args: argparse.Namespace,
    workdir: Path,
    source: Path | None,
    synapse_python: Path | None,
    memory: dict[str, dict[str, float]],
) -> list[Peer]:
    """Start chatmedia (its idle memory read before anything else runs), then nginx and
    Synapse; each is stopped when `stack` closes. chatmedia comes first in the list, then
    the same server seen through its key-less file-engine URL."""
    backend = stack.enter_context(backend_settings(args.backend, workdir))
    settings = {**backend, **chatmedia_settings(args)}
    cm = stack.enter_context(peers.chatmedia(workdir, args.chatmedia_workers, source, settings))
    time.sleep(0.5)  # start-up allocations settle before the worker counts as idle
    memory["chatmedia"] = {
        "idle_start": idle_memory(cm),
        "idle_start_private": round(sum(private_kib(p) for p in cm.memory_pids()) / 1024, 1),
    }
    peer_list: list[Peer] = [cm, replace(cm, keyless=True, name="chatmedia-fe")]
    if not args.no_signed:
        peer_list.append(replace(cm, signed=True, name="chatmedia-signed"))
    if "nginx" in args.peer_names:
        peer_list.append(stack.enter_context(peers.nginx(workdir)))
        if args.backend == BACKENDS[0]:  # the offload sends local files only
            accel = peers.chatmedia_accel(workdir, args.chatmedia_workers, source, settings)
            peer_list.append(stack.enter_context(accel))
    # Like the offload's, on local files only: with another backend it would share the
    # first server's database and store.
    if SCAN in args.peer_names and args.backend == BACKENDS[0] and "W3" in args.workloads:
        starting = scan_peer.stub_clamd if args.scan_with == "stub" else scan_peer.clamd
        clamd = stack.enter_context(starting(workdir))
        scanning = scan_peer.chatmedia_scan(
            workdir, clamd, args.chatmedia_workers, source, settings
        )
        peer_list.append(stack.enter_context(scanning))
    if synapse_python is not None:
        console.print("starting Synapse (takes a few seconds)")
        synapse = peers.synapse(workdir, synapse_python, args.synapse_info_logs)
        peer_list.append(stack.enter_context(synapse))
    for peer in peer_list:
        if not peer.name.startswith("chatmedia"):
            memory[peer.name] = {"idle_start": idle_memory(peer)}
    console.print("servers up: " + ", ".join(f"{p.name} {p.address[1]}" for p in peer_list))
    return peer_list


def measure_runs(
    peer_list: list[Peer],
    files: w.Files,
    settings: w.Settings,
    workloads: list[str],
    runs: int,
    probes: dict[str, Any],
    disturbed: list[w.Sample],
) -> list[w.Sample]:
    """Every workload against every peer, `runs` times; within a run the peers take turns
    on each workload, their order shifted by one from run to run. A measurement during
    which other processes used more than FOREIGN_LIMIT of a core is put in `disturbed` and
    taken again (at most RETRIES times), after waiting for the machine to be quiet."""
    samples = []
    for run in range(1, runs + 1):
        for workload in workloads:
            chosen = targets_for(workload, peer_list, probes)
            shift = (run - 1) % len(chosen)
            for peer in chosen[shift:] + chosen[:shift]:
                for attempt in range(RETRIES + 1):
                    wait_until_quiet()
                    sample = run_one(workload, peer, run, files, settings)
                    show(sample)
                    foreign = sample.foreign_cpu_s / max(sample.wall_s, 0.001)
                    if foreign <= FOREIGN_LIMIT or attempt == RETRIES:
                        break
                    sample.notes.append(f"others used {foreign:.2f} cores: taken again")
                    disturbed.append(sample)
                samples.append(sample)
    return samples


def wait_until_quiet(longest: float = QUIET_WAIT) -> float:
    """Wait (bounded) until processes outside the benchmark use less than FOREIGN_LIMIT of
    a core over a second; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < longest:
        before = foreign_cpu_seconds()
        time.sleep(1.0)
        if foreign_cpu_seconds() - before < FOREIGN_LIMIT:
            break
    return time.monotonic() - started


def warm_up(
    peer_list: list[Peer],
    files: w.Files,
    settings: w.Settings,
    workloads: list[str],
    probes: dict[str, Any],
) -> None:
    """One short, unrecorded pass of each wrk workload and one download per peer: connection
    pools, caches and the page cache are warm for everyone before the first timed run."""
    short = replace(settings, duration=1.0, w1_repeat=1)
    for workload in ("W1x1", "W2", "W3", "W5"):
        if workload in workloads or (workload == "W1x1" and "W1x8" in workloads):
            for peer in targets_for(workload, peer_list, probes):
                run_one(workload, peer, 0, files, short)
    console.print("warm-up done")


def show(sample: w.Sample) -> None:
    """One line per measurement, as it happens."""
    figures = ", ".join(f"{k} {v:g}" for k, v in sample.metrics.items())
    flag = "" if sample.ok else f" [red]FAILED: {'; '.join(sample.notes)}[/red]"
    console.print(
        f"run {sample.run} {sample.workload:<5} {sample.peer:<13} {figures}; "
        f"RSS peak {sample.peak_rss_mib:.1f} MiB; load {sample.loadavg_1m:.2f}{flag}",
        highlight=False,
    )


if __name__ == "__main__":
    main()
