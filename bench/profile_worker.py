"""Where chatmedia's worker spends its time during a workload (`bench/run.py --profile`).

For each chosen workload it runs the workload against chatmedia alone, repeated for at
least `duration` seconds, while:

- `py-spy record --nonblocking` samples the Python stacks of the worker's threads (idle
  threads left out), written as collapsed stacks to bench/work/profiles/ (git-ignored).
  `--native` is not used: it pauses the worker for every sample, and at any useful rate
  the worker then serves next to nothing;
- `perf record` (Debian's linux-perf, when installed) samples the worker on the CPU, kernel
  included, and its report splits that time by library: the kernel, the interpreter
  (libpython), SQLite, OpenSSL's SHA-256 (libcrypto), granian's Rust code;
- the CPU time of each of the worker's threads (by name: the Python threads, granian's
  tokio runtime threads) and the user/system split are read from /proc.

A peer with helpers (`chatmedia-scan`'s clamd) has them sampled by perf too, its report
also split by command, and their CPU time read.

Figures measured under the profilers are not results. A summary (the heaviest Python
frames, self and inclusive; perf's split by library and its heaviest symbols; the CPU
per thread) goes to bench/results/profile-<date>.json.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import console, cpu_times, save_json
from peers import Chatmedia, Peer
from tools import WORK_DIR
from workloads import Files, Sample, Settings

PROFILE_DIR = WORK_DIR / "profiles"
RATE = 97  # samples per second: low, as reading the stacks slows the worker down
PERF_RATE = 999
TOP = 30
PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(.+?)\s*$")

RunOne = Callable[[str, Peer, int, Files, Settings], Sample]


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """CPU seconds of each thread, by thread id, with its name; the main thread, which runs
    the event loop, named apart from the other Python threads."""
    threads = {}
    hz = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        if task.name == str(pid):
            name = "main thread (event loop)"
        threads[task.name] = (name, (int(fields[11]) + int(fields[12])) / hz)
    return threads


def cpu_by_name(
    before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds used between two `thread_cpu` readings, summed per thread name (threads
    that ended in between are not counted)."""
    totals: Counter[str] = Counter()
    for tid, (name, seconds) in after.items():
        totals[name] += seconds - before.get(tid, (name, 0.0))[1]
    return {name: round(seconds, 2) for name, seconds in totals.most_common()}


def summarize(collapsed: Iterable[str]) -> dict[str, Any]:
    """The heaviest frames of py-spy's collapsed stacks: self (the frame running) and
    inclusive (the frame anywhere on the stack), as shares of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def top(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(TOP)]

    return {"samples": total, "self_percent": top(own), "inclusive_percent": top(inclusive)}


def profile(
    cm: Chatmedia,
    files: Files,
    settings: Settings,
    workloads: list[str],
    py_spy: Path,
    run_one: RunOne,
    code: dict[str, Any],
) -> None:
    """Profile each workload against chatmedia and save the summary."""
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    results: dict[str, Any] = {}
    perf = shutil.which("perf")
    for workload in workloads:
        (worker,) = cm.memory_pids()[:1]
        raw = PROFILE_DIR / f"{stamp}-{workload}.txt"
        perf_data = PROFILE_DIR / f"{stamp}-{workload}.perf"
        spy_command = [str(py_spy), "record", "--nonblocking", "--gil", "--function"]
        spy_command += ["--rate", str(RATE)]
        spy_command += ["--format", "raw", "--pid", str(worker), "--output", str(raw)]
        profilers = [spy_command]
        if perf:
            pids = ",".join(str(pid) for pid in (worker, *cm.helper_pids))
            profilers.append(
                [perf, "record", "-F", str(PERF_RATE), "-p", pids, "-o", str(perf_data)]
            )
        log = (PROFILE_DIR / f"{stamp}-{workload}.log").open("wb")
        running = [subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT) for c in profilers]
        try:
            time.sleep(1.0)  # the profilers attach
            threads_before = thread_cpu(worker)
            user0, sys0 = cpu_times([worker])
            helpers0 = sum(cpu_times(cm.helper_pids))
            started = time.monotonic()
            samples = []
            for attempt in range(1000):  # bounded: until `duration` has passed
                samples.append(run_one(workload, cm, attempt + 1, files, settings))
                if time.monotonic() - started >= settings.duration:
                    break
            wall = time.monotonic() - started
            user1, sys1 = cpu_times([worker])
            helpers1 = sum(cpu_times(cm.helper_pids))
            threads_after = thread_cpu(worker)
        finally:
            for process in running:
                process.send_signal(signal.SIGINT)  # both write their output on Ctrl-C
            for process in running:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
        cpu = cpu_by_name(threads_before, threads_after)
        summary = summarize(raw.read_text().splitlines()) if raw.exists() else {}
        if perf and perf_data.exists():
            summary["perf_by_library"] = perf_report(perf, perf_data, "dso")
            summary["perf_by_symbol"] = perf_report(perf, perf_data, "dso,sym")
            if cm.helper_pids:
                summary["perf_by_command"] = perf_report(perf, perf_data, "comm,dso")
        results[workload] = {
            "wall_s": round(wall, 2),
            "repetitions": len(samples),
            "worker_user_s": round(user1 - user0, 2),
            "worker_system_s": round(sys1 - sys0, 2),
            "helper_cpu_s": round(helpers1 - helpers0, 2),
            "thread_cpu_s": cpu,
            "metrics_under_profiler": [s.metrics for s in samples],
            "collapsed_stacks": str(raw),
        } | summary
        console.print(f"{workload}: profiled {len(samples)} runs in {wall:.1f} s -> {raw}")
        console.print(f"  CPU by thread: {results[workload]['thread_cpu_s']}", highlight=False)
        for frame, share in summary.get("self_percent", [])[:12]:
            console.print(f"  {share:5.1f} %  {frame}", highlight=False, markup=False)
        for name, share in summary.get("perf_by_library", [])[:8]:
            console.print(f"  perf {share:5.1f} %  {name}", highlight=False, markup=False)
    saved = save_json(
        "profile",
        {
            "benchmark": "profile",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": code,
            "rate_hz": RATE,
            "workloads": results,
        },
    )
    console.print(f"profile summary: {saved}")


def perf_report(perf: str, data: Path, sort: str) -> list[tuple[str, float]]:
    """perf's on-CPU samples grouped by `sort` (dso, or dso,sym): the heaviest, in percent."""
    done = subprocess.run(
        [perf, "report", "--stdio", "--no-children", "--sort", sort, "-i", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rows = []
    for line in done.stdout.splitlines():
        match = PERF_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            rows.append((" ".join(match.group(2).split()), float(match.group(1))))
    return rows[:TOP]
