"""Transfer benchmark: throughput and worker memory for one large upload and download.

It starts a real `chatmedia serve` in a temporary folder, creates a file of random bytes
(256 MiB by default), and for each run:

1. gives the file new first bytes, so that deduplication cannot shortcut the upload,
2. uploads it with `POST /v1/files` (multipart/form-data, streamed from disk) and checks
   the size and SHA-256 the server reports,
3. downloads it with `GET /v1/files/{id}/content`, counting the bytes, then once more
   untimed to check their SHA-256,
4. deletes it.

After the last run it also downloads once through the file-engine compatibility URL
(`/file-engine/api/downloadFileStream`, no key). Throughput is the file size over the wall
time of the request, in MB/s (1 MB = 10^6 bytes). While each transfer runs, a thread samples
the granian worker's resident memory (VmRSS) every 20 ms; the kernel's own peak (VmHWM) is
reset before and read after each phase, and the worker's CPU time is taken around it.
Results are printed and written as JSON to `bench/results/`.

Run it from the repository root (`make bench` does this):

    .venv/bin/python bench/transfer.py [--size-mib 256] [--runs 3] [--tmp-dir DIR]

Linux only: it reads /proc for the process tree and memory figures.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

MB = 1_000_000  # throughput unit, as network figures are usually quoted
MIB = 1024 * 1024  # file sizes and memory
PIECE = MIB  # size of each write when creating the file and each upload body chunk
SAMPLE_INTERVAL = 0.02
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = httpx.Timeout(300.0)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# On first start the server prints the first API key alone on its line.
KEY_LINE = re.compile(r"^(cm_\S+)\s*$", re.MULTILINE)
# Log lines worth a look after the run (granian and chatmedia both log "LEVEL name ...").
SUSPICIOUS = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b")

console = Console()


# --- the server under test ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running `chatmedia serve` and what a client needs to talk to it."""

    process: subprocess.Popen[bytes]
    base_url: str
    key: str
    log_path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chatmedia_executable() -> Path:
    """The `chatmedia` script of the interpreter running this benchmark."""
    path = Path(sys.executable).parent / "chatmedia"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `make .venv/.installed` first")
    return path


@contextmanager
def running_server(workdir: Path, max_upload: str) -> Iterator[Server]:
    """Start a server on a fresh data folder and stop it on the way out, whatever happens."""
    port = free_port()
    # The settings are the benchmark's: none of the caller's CHATMEDIA_* variables leak in.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHATMEDIA_")}
    env = inherited | {
        "CHATMEDIA_DATA_DIR": str(workdir / "data"),
        "CHATMEDIA_HOST": "127.0.0.1",
        "CHATMEDIA_PORT": str(port),
        "CHATMEDIA_MAX_UPLOAD_SIZE": max_upload,
        # stdout is a file here: without this the key line could sit in a buffer.
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        # A session of its own, so that stopping it reaches the granian workers too.
        process = subprocess.Popen(
            [str(chatmedia_executable()), "serve"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        key = wait_for_key(process, log_path, deadline)
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(process, base_url, log_path, deadline)
        yield Server(process, base_url, key, log_path)
    finally:
        stop(process)


def wait_for_key(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> str:
    """The first API key, once the server has printed it."""
    while time.monotonic() < deadline:
        match = KEY_LINE.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        check_alive(process, log_path)
        time.sleep(0.05)
    raise RuntimeError(f"no API key in the server's output:\n{log_tail(log_path)}")


def wait_healthy(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, deadline: float
) -> None:
    """Return once GET /healthz answers 200."""
    while time.monotonic() < deadline:
        check_alive(process, log_path)
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"/healthz did not answer 200 in time:\n{log_tail(log_path)}")


def check_alive(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Raise with the server's output if it has exited."""
    if process.poll() is not None:
        raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group; SIGKILL it if it has not exited in time, and
    SIGKILL any worker left behind by a main process that exited on its own."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            console.print("[yellow]server did not stop after SIGTERM; killing it[/yellow]")
        except ProcessLookupError:
            pass  # it exited between poll() and killpg()
    with suppress(ProcessLookupError):  # nothing left in the group: the usual case
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last lines of the server's output."""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


# --- /proc: the worker processes and their memory -------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/<pid>/task/<tid>/children (any thread may be
    the parent, so all of them are read)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def worker_pids(server_pid: int) -> list[int]:
    """The granian workers: the Python processes below the server that serve requests.
    multiprocessing's resource tracker, if one runs, is left out."""
    workers = []
    for pid in descendants(server_pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"resource_tracker" not in cmdline:
            workers.append(pid)
    if not workers:
        raise RuntimeError(f"no worker process found below the server (pid {server_pid})")
    return workers


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of `pid` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used, all threads together."""
    ticks = 0
    for pid in pids:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's VmHWM of `pid` to its current RSS (Linux >= 4.0); False when not
    allowed, in which case VmHWM is the peak since the process started."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples the summed VmRSS of some processes in a thread while a `with` block runs, and
    reads their VmHWM at its end. At the highest sample it also keeps how much of it was
    anonymous memory and how much mapped files (libmagic's database is one)."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_kib = 0
        self.peak_anon_kib = 0
        self.peak_file_kib = 0
        self.samples = 0
        self.hwm_kib = 0
        self.hwm_reset = False

    def __enter__(self) -> RssSampler:
        # Every process is reset, even after one refuses: no short-circuit here.
        resets = [reset_peak(pid) for pid in self._pids]
        self.hwm_reset = all(resets)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm_kib = sum(memory_kib(pid)["VmHWM"] for pid in self._pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            figures = [memory_kib(pid) for pid in self._pids]
            rss = sum(f["VmRSS"] for f in figures)
            if rss > self.peak_kib:
                self.peak_kib = rss
                self.peak_anon_kib = sum(f["RssAnon"] for f in figures)
                self.peak_file_kib = sum(f["RssFile"] for f in figures)
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL)


def private_kib(pid: int) -> int:
    """Memory only `pid` holds (Private_Clean + Private_Dirty), in KiB. The worker is forked
    from the main process, so its RSS also counts the pages it still shares with it."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def rss_mib(pids: list[int]) -> float:
    """The summed current RSS of `pids` in MiB."""
    return sum(memory_kib(pid)["VmRSS"] for pid in pids) / 1024


# --- the transfers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed transfer and the worker memory while it ran."""

    phase: str
    bytes: int
    seconds: float
    mb_per_s: float
    worker_cpu_s: float
    peak_rss_mib: float
    peak_rss_anon_mib: float
    peak_rss_file_mib: float
    vm_hwm_mib: float
    hwm_reset: bool
    rss_samples: int


def measure(phase: str, pids: list[int], transfer: Callable[[], int]) -> Measurement:
    """Run `transfer()` (which returns the byte count) under the clock and the sampler."""
    with RssSampler(pids) as sampler:
        cpu_before = cpu_seconds(pids)
        started = time.perf_counter()
        size = transfer()
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(pids) - cpu_before
    return Measurement(
        phase=phase,
        bytes=size,
        seconds=round(seconds, 4),
        mb_per_s=round(size / seconds / MB, 1),
        worker_cpu_s=round(cpu, 2),
        peak_rss_mib=round(sampler.peak_kib / 1024, 1),
        peak_rss_anon_mib=round(sampler.peak_anon_kib / 1024, 1),
        peak_rss_file_mib=round(sampler.peak_file_kib / 1024, 1),
        vm_hwm_mib=round(sampler.hwm_kib / 1024, 1),
        hwm_reset=sampler.hwm_reset,
        rss_samples=sampler.samples,
    )


def create_random_file(path: Path, size: int) -> None:
    """`size` random bytes, written a piece at a time so the benchmark stays small too."""
    with path.open("wb") as out:
        remaining = size
        while remaining:
            piece = min(PIECE, remaining)
            out.write(os.urandom(piece))
            remaining -= piece


def make_distinct(path: Path) -> str:
    """Give the file new first bytes (so that no run is served by dedup) and return its
    SHA-256, computed outside the timed part."""
    with path.open("r+b") as f:
        f.write(os.urandom(16))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def multipart_body(path: Path, boundary: str) -> tuple[int, Iterator[bytes]]:
    """A multipart/form-data body with one `file` part read from `path`, and its length.
    The length is known up front, so the request carries Content-Length, not chunks."""
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while piece := f.read(PIECE):
                yield piece
        yield tail

    return len(head) + path.stat().st_size + len(tail), chunks()


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    """POST the file to /v1/files; the File JSON."""
    boundary = os.urandom(16).hex()
    length, body = multipart_body(path, boundary)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
    }
    response = client.post("/v1/files", content=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
    record: dict[str, Any] = response.json()
    return record


def download(client: httpx.Client, url: str, size: int) -> int:
    """GET `url` and count the bytes, discarding them; raises unless there are `size`."""
    received = 0
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        for chunk in response.iter_raw():
            received += len(chunk)
    if received != size:
        raise RuntimeError(f"GET {url}: {received} bytes, expected {size}")
    return received


def verify(client: httpx.Client, url: str, sha256: str) -> None:
    """GET `url` again, untimed, and check the bytes' SHA-256. Hashing in the timed pass
    would measure this client's hashing (about 1.7 GB/s on one core), not the server."""
    digest = hashlib.sha256()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise RuntimeError(f"GET {url}: sha256 {digest.hexdigest()}, expected {sha256}")


@dataclass
class Results:
    """Everything one benchmark run produced."""

    size_bytes: int
    runs: int
    idle_rss_mib: float
    idle_rss_anon_mib: float
    idle_rss_file_mib: float
    idle_private_mib: float
    rss_after_run_mib: list[float] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    log_warnings: list[str] = field(default_factory=list)


def run_transfers(server: Server, source: Path, runs: int) -> Results:
    """The timed runs against one server."""
    pids = worker_pids(server.process.pid)
    time.sleep(0.5)  # let start-up allocations settle before calling the worker idle
    idle = [memory_kib(pid) for pid in pids]
    results = Results(
        size_bytes=source.stat().st_size,
        runs=runs,
        idle_rss_mib=round(sum(f["VmRSS"] for f in idle) / 1024, 1),
        idle_rss_anon_mib=round(sum(f["RssAnon"] for f in idle) / 1024, 1),
        idle_rss_file_mib=round(sum(f["RssFile"] for f in idle) / 1024, 1),
        idle_private_mib=round(sum(private_kib(pid) for pid in pids) / 1024, 1),
    )
    auth = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=HTTP_TIMEOUT) as client:
        for run in range(1, runs + 1):
            record = one_run(client, pids, source, results)
            if run == runs:
                results.measurements.append(compat_download(server, pids, record))
            client.delete(f"/v1/files/{record['id']}").raise_for_status()
            results.rss_after_run_mib.append(round(rss_mib(pids), 1))
            console.print(f"run {run}/{runs} done")
    return results


def one_run(
    client: httpx.Client, pids: list[int], source: Path, results: Results
) -> dict[str, Any]:
    """Upload fresh content and download it again; the File JSON of the upload."""
    sha256 = make_distinct(source)
    size = results.size_bytes
    record: dict[str, Any] = {}

    def send() -> int:
        record.update(upload(client, source))
        if record["sha256"] != sha256 or record["size"] != size:
            raise RuntimeError(f"the server stored something else: {record}")
        return size

    results.measurements.append(measure("upload", pids, send))
    url = f"/v1/files/{record['id']}/content"
    results.measurements.append(measure("download", pids, lambda: download(client, url, size)))
    verify(client, url, sha256)
    return record


def compat_download(server: Server, pids: list[int], record: dict[str, Any]) -> Measurement:
    """One download through the file-engine URL, without a key: connectors hand this URL
    to providers that cannot send one."""
    url = f"/file-engine/api/downloadFileStream?filename={record['storedName']}"
    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT) as anonymous:
        measurement = measure(
            "compat download", pids, lambda: download(anonymous, url, record["size"])
        )
        verify(anonymous, url, record["sha256"])
    return measurement


# --- the report -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "hostname": platform.node(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": importlib.metadata.version("granian"),
        "chatmedia": importlib.metadata.version("chatmedia"),
    }


def source_state() -> dict[str, Any]:
    """The commit measured and any uncommitted changes under src/: the figures belong to
    that code, not to whatever the branch holds later."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "src_changes": git("status", "--porcelain", "--", "src").splitlines(),
        # Set when the server is pointed at another copy of the code.
        "pythonpath": os.environ.get("PYTHONPATH"),
    }


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on (ext4, tmpfs…): fsync costs depend on it."""
    best, kind = "", "unknown"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def suspicious_lines(log_path: Path) -> list[str]:
    """Server log lines that mention a warning, an error or a traceback."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if SUSPICIOUS.search(line)]


def summary_table(results: Results) -> Table:
    """Per phase: median, min and max throughput, median worker CPU time, and the highest
    sampled RSS (VmHWM, which the kernel updates lazily, is in the JSON)."""
    size = f"{results.size_bytes / MIB:g} MiB"
    table = Table(
        title=f"chatmedia transfer of a {size} file",
        caption="MB/s with 1 MB = 10^6 bytes; the worker's CPU seconds and RSS in MiB",
    )
    table.add_column("phase", no_wrap=True)
    columns = ("runs", "median", "min", "max", "CPU s", "peak RSS", "over idle")
    for column in columns:
        table.add_column(column, justify="right")
    for phase in dict.fromkeys(m.phase for m in results.measurements):
        ms = [m for m in results.measurements if m.phase == phase]
        speeds = [m.mb_per_s for m in ms]
        peak = max(m.peak_rss_mib for m in ms)
        table.add_row(
            phase,
            str(len(ms)),
            f"{statistics.median(speeds):.0f}",
            f"{min(speeds):.0f}",
            f"{max(speeds):.0f}",
            f"{statistics.median(m.worker_cpu_s for m in ms):.2f}",
            f"{peak:.1f}",
            f"{peak - results.idle_rss_mib:+.1f}",
        )
    return table


def write_json(results: Results, source: dict[str, Any], workdir: Path, command: list[str]) -> Path:
    """Save the raw figures as bench/results/transfer-<YYYYMMDD-HHMMSS>.json."""
    now = datetime.now(UTC)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"transfer-{now:%Y%m%d-%H%M%S}.json"
    document = {
        "benchmark": "transfer",
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "source": source,
        "data_filesystem": filesystem_of(workdir),
        "units": {"throughput": "MB/s, 1 MB = 10^6 bytes", "memory": "MiB"},
        **asdict(results),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """--size-mib, --runs and --tmp-dir."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="where to make the temporary folder"
    )
    args = parser.parse_args()
    if args.size_mib < 1 or args.runs < 1:
        parser.error("--size-mib and --runs must be at least 1")
    return args


def exit_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit, so the `finally` that stops the server still runs: the
    server has a session of its own and would outlive a benchmark killed outright."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Create the file, start the server, run the transfers, report and save."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    # The target is a 256 MiB upload "with the limit raised": 1 GiB, or more if asked.
    max_upload = f"{max(1024, 2 * args.size_mib)}MiB"
    code = source_state()  # before the server starts: that is the code it runs
    with tempfile.TemporaryDirectory(prefix="chatmedia-bench-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        source = workdir / "payload.bin"
        console.print(f"creating {args.size_mib} MiB of random bytes in {workdir}")
        create_random_file(source, args.size_mib * MIB)
        with running_server(workdir, max_upload) as server:
            console.print(f"server up at {server.base_url} (pid {server.process.pid})")
            results = run_transfers(server, source, args.runs)
            results.log_warnings = suspicious_lines(server.log_path)
        saved = write_json(results, code, workdir, [Path(sys.executable).name, *sys.argv])
    console.print(summary_table(results))
    after = ", ".join(f"{v:.1f}" for v in results.rss_after_run_mib)
    console.print(
        f"worker idle after start: RSS {results.idle_rss_mib:.1f} MiB, of which private "
        f"{results.idle_private_mib:.1f} MiB; RSS after each run: {after} MiB"
    )
    for line in results.log_warnings:
        console.print(f"[yellow]server log:[/yellow] {line}", highlight=False)
    console.print(f"raw results: {saved}")


if __name__ == "__main__":
    main()
