"""What every benchmark here shares: starting and stopping servers as process groups, finding
their processes and reading their memory and CPU time from /proc, and describing the machine
and the code measured.

Linux only: it reads /proc for the process tree and memory figures.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

MB = 1_000_000  # throughput unit, as network figures are usually quoted
MIB = 1024 * 1024  # file sizes and memory
SAMPLE_INTERVAL = 0.02
PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# On first start chatmedia prints the first API key alone on its line.
KEY_LINE = re.compile(r"^(cm_\S+)\s*$", re.MULTILINE)
# Log lines worth a look after the run (granian and chatmedia both log "LEVEL name ...").
SUSPICIOUS = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b")

console = Console()


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_process(
    command: Sequence[str], cwd: Path, env: Mapping[str, str] | None, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in a session (and so a process group) of its own, its output going to
    `log_path`; stop it with `stop()`, which reaches every process of the group."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group; SIGKILL it if it has not exited in time, and SIGKILL any
    child left behind by a main process that exited on its own."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            console.print(f"[yellow]pid {process.pid} did not stop after SIGTERM; killing[/yellow]")
        except ProcessLookupError:
            pass  # it exited between poll() and killpg()
    with suppress(ProcessLookupError):  # nothing left in the group: the usual case
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def check_alive(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Raise with the process's output if it has exited."""
    if process.poll() is not None:
        raise RuntimeError(
            f"{process.args!r} exited with {process.returncode}:\n{log_tail(log_path)}"
        )


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last lines of a server's output."""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(process: subprocess.Popen[bytes], url: str, log_path: Path, deadline: float) -> None:
    """Return once GET `url` answers 200 (the server is up)."""
    while time.monotonic() < deadline:
        check_alive(process, log_path)
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 in time:\n{log_tail(log_path)}")


def suspicious_lines(log_path: Path) -> list[str]:
    """Server log lines that mention a warning, an error or a traceback."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if SUSPICIOUS.search(line)]


def exit_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit, so the `finally` blocks that stop the servers still run:
    each server has a session of its own and would outlive a benchmark killed outright."""
    raise SystemExit(128 + signum)


# --- chatmedia ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running `chatmedia serve` and what a client needs to talk to it."""

    process: subprocess.Popen[bytes]
    base_url: str
    key: str
    log_path: Path
    data_dir: Path


def chatmedia_executable() -> Path:
    """The `chatmedia` script of the interpreter running this benchmark."""
    path = Path(sys.executable).parent / "chatmedia"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `make .venv/.installed` first")
    return path


@contextmanager
def running_server(
    workdir: Path,
    max_upload: str,
    workers: int | None = None,
    source: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Start `chatmedia serve` on a fresh data folder under `workdir` and stop it on the way
    out, whatever happens. `workers` sets CHATMEDIA_WORKERS (default: the server's own);
    `source` is a folder whose `chatmedia` package is run instead of the checkout's;
    `settings` are more CHATMEDIA_* variables (with a database URL, it is migrated first)."""
    port = free_port()
    # The settings are the benchmark's: none of the caller's CHATMEDIA_* variables leak in.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHATMEDIA_")}
    data_dir = workdir / "data"
    env = inherited | {
        "CHATMEDIA_DATA_DIR": str(data_dir),
        "CHATMEDIA_HOST": "127.0.0.1",
        "CHATMEDIA_PORT": str(port),
        "CHATMEDIA_MAX_UPLOAD_SIZE": max_upload,
        # stdout is a file here: without this the key line could sit in a buffer.
        "PYTHONUNBUFFERED": "1",
    }
    if workers is not None:
        env["CHATMEDIA_WORKERS"] = str(workers)
    if source is not None:
        # Absolute: the server runs in `workdir`, where a relative path would find nothing
        # (and Python would quietly import the checkout's code instead).
        env["PYTHONPATH"] = str(source.resolve())
    env |= settings or {}
    if "CHATMEDIA_DATABASE_URL" in env:
        migrate = [str(chatmedia_executable()), "migrate"]
        subprocess.run(migrate, cwd=workdir, env=env, check=True, capture_output=True)
    log_path = workdir / "server.log"
    process = start_process([str(chatmedia_executable()), "serve"], workdir, env, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        key = wait_for_key(process, log_path, deadline)
        base_url = f"http://127.0.0.1:{port}"
        wait_http(process, f"{base_url}/healthz", log_path, deadline)
        yield Server(process, base_url, key, log_path, data_dir)
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


# --- /proc: processes, memory and CPU time --------------------------------------------------


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


def private_kib(pid: int) -> int:
    """Memory only `pid` holds (Private_Clean + Private_Dirty), in KiB. The worker is forked
    from the main process, so its RSS also counts the pages it still shares with it."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def rss_mib(pids: Sequence[int]) -> float:
    """The summed current RSS of `pids` in MiB."""
    return sum(memory_kib(pid)["VmRSS"] for pid in pids) / 1024


def cpu_times(pids: Sequence[int]) -> tuple[float, float]:
    """User and system CPU seconds the processes have used, all threads together."""
    user = system = 0
    for pid in pids:
        try:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a process that ended (an nginx worker being replaced, say)
        user += int(fields[11])
        system += int(fields[12])
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time the processes have used, all threads together."""
    return sum(cpu_times(pids))


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all CPUs) since boot: compared with
    what the server and the client used, it shows what else ran during a measurement."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7))
    return busy / os.sysconf("SC_CLK_TCK")


def foreign_cpu_seconds() -> float:
    """CPU seconds used so far by the user-space processes that are not this benchmark or
    its children (the servers, wrk): what someone else running tests on the machine takes.
    Children a process has waited for count towards it (cutime, cstime)."""
    ours = {os.getpid(), *descendants(os.getpid())}
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        if int(fields[6]) & PF_KTHREAD:
            continue  # kernel threads: writeback and softirq work belong to the workload
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
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

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
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


# --- what was measured, where ---------------------------------------------------------------


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
        "os": _os_release(),
        "python": platform.python_version(),
        "granian": importlib.metadata.version("granian"),
        "chatmedia": importlib.metadata.version("chatmedia"),
    }


def _os_release() -> str:
    with suppress(OSError):
        text = Path("/etc/os-release").read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.MULTILINE)
        if match:
            return match.group(1)
    return platform.platform()


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def source_state(exported: Path | None = None, commit: str | None = None) -> dict[str, Any]:
    """The commit measured and any uncommitted changes under src/: the figures belong to
    that code, not to whatever the branch holds later. With `exported` (see
    `export_source`), the server ran that commit's src/ exactly, whatever the checkout held."""
    if exported is not None:
        return {
            "commit": commit,
            "src_changes": [],
            "exported_to": str(exported),
            "checkout_head": _git("rev-parse", "HEAD") or None,
            "checkout_src_changes": _git("status", "--porcelain", "--", "src").splitlines(),
        }
    return {
        "commit": _git("rev-parse", "HEAD") or None,
        "src_changes": _git("status", "--porcelain", "--", "src").splitlines(),
        # Set when the server is pointed at another copy of the code.
        "pythonpath": os.environ.get("PYTHONPATH"),
    }


def export_source(revision: str, into: Path) -> tuple[Path, str]:
    """Extract src/ of `revision` (git archive) under `into`; returns the folder to put on
    PYTHONPATH and the full commit id. The checkout is not touched: someone may be editing
    src/ while the benchmark runs."""
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
    if not commit:
        raise SystemExit(f"{revision!r} is not a commit of {REPO}")
    target = into / f"src-{commit[:12]}"
    if not (target / "src" / "chatmedia").is_dir():
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "src"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target / "src", commit


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on (ext4, tmpfs…): fsync costs depend on it."""
    best, kind = "", "unknown"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def save_json(benchmark: str, document: Mapping[str, Any]) -> Path:
    """Write `document` as bench/results/<benchmark>-<YYYYMMDD-HHMMSS>.json."""
    now = datetime.now(UTC)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}-{now:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def create_random_file(path: Path, size: int, piece: int = 1024 * 1024) -> None:
    """`size` random bytes, written `piece` bytes at a time (memory stays small)."""
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = min(piece, remaining)
            out.write(os.urandom(chunk))
            remaining -= chunk
