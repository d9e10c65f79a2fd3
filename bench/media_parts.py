"""What bench/media.py is made of: the photos it uploads, the watch it keeps on chatmedia's
media processes (/proc), on its log and on its event stream, and the probe that splits a
sandboxed task's time.

Photos are made with Pillow alone: gradients, blurred ellipses and Gaussian noise, saved
as JPEG with EXIF orientation 6 (a phone held upright) and a 32-character token in the
EXIF ImageDescription. Each upload replaces the token with one of its own: the same photo
as far as a decoder is concerned, new bytes (and a new SHA-256) every time, so that neither
server deduplicates or caches anything.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from common import console, foreign_cpu_seconds
from run import FOREIGN_LIMIT, RETRIES, wait_until_quiet
from sse import EventFollower

T = TypeVar("T")
TOKEN_LENGTH = 32
ORIENTATION = 6  # EXIF: the stored picture must be turned 90° clockwise to be upright
_EXIF_ORIENTATION, _EXIF_DESCRIPTION, _EXIF_MAKE, _EXIF_MODEL = 0x0112, 0x010E, 0x010F, 0x0110
_COM_OVERHEAD = 4  # a JPEG COM segment's marker and length
EVENT_TIMEOUT = 120.0


# --- photos ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Photo:
    """A JPEG holding `token` once; `variant()` gives the same photo with new bytes."""

    data: bytes
    token: bytes
    width: int
    height: int
    quality: int

    def variant(self) -> bytes:
        """The photo with a token of its own in place of `token`."""
        return self.data.replace(self.token, secrets.token_hex(TOKEN_LENGTH // 2).encode(), 1)

    def describe(self) -> dict[str, Any]:
        """What the photo is, for the results."""
        return {"width": self.width, "height": self.height, "bytes": len(self.data),
                "jpeg_quality": self.quality, "exif_orientation": ORIENTATION}  # fmt: skip


def make_photo(
    width: int, height: int, quality: int, noise: float, seed: int, size: int | None = None
) -> Photo:
    """A photographic-looking JPEG of width x height as stored (upright it is turned a
    quarter). With `size`, a COM segment pads it to exactly that many bytes."""
    rnd = random.Random(seed)
    across = Image.linear_gradient("L").resize((width, height))
    around = Image.radial_gradient("L").resize((width, height))
    down = ImageChops.invert(across.transpose(Image.Transpose.ROTATE_90).resize((width, height)))
    picture = Image.merge("RGB", (across, around, down))
    draw = ImageDraw.Draw(picture)
    for _ in range(60):
        x, y = rnd.randrange(width), rnd.randrange(height)
        w = rnd.randrange(width // 40, width // 6)
        h = round(w * rnd.uniform(0.5, 1.5))
        draw.ellipse((x, y, x + w, y + h), fill=tuple(rnd.randrange(256) for _ in range(3)))
    picture = picture.filter(ImageFilter.GaussianBlur(width / 400))
    grain = Image.merge("RGB", [Image.effect_noise((width, height), noise) for _ in range(3)])
    picture = ImageChops.add(picture, grain, offset=-128)  # noise centred on 0
    token = secrets.token_hex(TOKEN_LENGTH // 2).encode()
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = ORIENTATION
    exif[_EXIF_MAKE], exif[_EXIF_MODEL] = "chatmedia bench", "synthetic"
    exif[_EXIF_DESCRIPTION] = token.decode()
    data = _jpeg(picture, quality, exif.tobytes(), b"")
    if size is not None:
        padding = size - len(data) - _COM_OVERHEAD
        if padding < 1:
            raise ValueError(f"the photo is {len(data)} bytes, more than {size}: lower the quality")
        data = _jpeg(picture, quality, exif.tobytes(), b" " * padding)
        if len(data) != size:
            raise RuntimeError(f"padded to {len(data)} bytes, not {size}")
    if data.count(token) != 1:
        raise RuntimeError("the token is not in the photo exactly once")
    return Photo(data, token, width, height, quality)


def photo_files(photo: Photo, folder: Path, count: int) -> list[Path]:
    """`count` files of the photo, each of bytes of its own, written and flushed to disk
    (the uploads' fsyncs then pay for nobody else's writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for _ in range(count):
        path = folder / f"photo-{secrets.token_hex(6)}.jpg"
        path.write_bytes(photo.variant())
        paths.append(path)
    os.sync()
    return paths


def _jpeg(picture: Image.Image, quality: int, exif: bytes, comment: bytes) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": quality, "exif": exif}
    if comment:
        options["comment"] = comment
    picture.save(out, "JPEG", **options)
    return out.getvalue()


# --- chatmedia's processes ------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The direct children of `pid` (any of its threads may be the parent)."""
    found: list[int] = []
    with suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with suppress(FileNotFoundError):
                found += map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """VmRSS and VmHWM of `pid` in KiB, None once it is gone."""
    rss = hwm = 0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def _pss_kib(pid: int) -> int:
    """Pss of `pid` in KiB (pages it shares counted in part), 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def chatmedia_roles(server_pid: int) -> dict[str, list[int]]:
    """chatmedia's processes by role: the granian workers, multiprocessing's fork servers
    (one per worker, from its first media task) and resource trackers below them."""
    roles: dict[str, list[int]] = {"workers": [], "fork_servers": [], "trackers": []}
    for pid in children(server_pid):
        if b"resource_tracker" in _cmdline(pid):
            roles["trackers"].append(pid)
            continue
        roles["workers"].append(pid)
        for below in children(pid):
            line = _cmdline(below)
            if b"forkserver" in line:
                roles["fork_servers"].append(below)
            elif b"resource_tracker" in line:
                roles["trackers"].append(below)
    return roles


def process_cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User and system CPU seconds of `pid`; with `reaped`, also of the children it has
    waited for (a fork server reaps the sandboxed children: their time lands there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if reaped else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def chatmedia_cpu(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of chatmedia's workers and of its media processes (the fork
    servers and every sandboxed child they reaped)."""
    roles = chatmedia_roles(server_pid)
    return {
        "workers": sum(process_cpu_seconds(p) for p in roles["workers"]),
        "media": sum(process_cpu_seconds(p, reaped=True) for p in roles["fork_servers"]),
    }


@dataclass
class ChildSeen:
    """A sandboxed child as the sampler saw it: when first and last, its highest figures."""

    first: float
    last: float
    hwm_kib: int = 0
    rss_kib: int = 0


class MediaSampler:
    """Samples chatmedia's processes every `interval` seconds in a thread: the workers, the
    fork servers and the sandboxed children they fork (each lives a few tens of ms). A
    child's VmHWM is its peak as long as it is seen: its last `interval` may be missed.
    The workers' VmHWM is reset at the start when the kernel allows it.

    RSS counts every page a process maps, so a child forked from the fork server counts
    the pages they share twice in a sum; every PSS_EVERY samples the sums are also taken
    of Pss (each shared page split between its sharers), which reading smaps_rollup
    makes too slow to take at every sample."""

    PSS_EVERY = 8

    def __init__(self, server_pid: int, interval: float = 0.003) -> None:
        self._server = server_pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="media-sampler", daemon=True)
        self.children: dict[int, ChildSeen] = {}
        self.peaks = {"worker_rss": 0, "worker_hwm": 0, "fork_server_rss": 0,
                      "media_rss_sum": 0, "all_rss_sum": 0, "media_pss_sum": 0,
                      "all_pss_sum": 0, "children_at_once": 0}  # fmt: skip
        self.samples = 0
        self.hwm_reset = False

    def __enter__(self) -> MediaSampler:
        workers = chatmedia_roles(self._server)["workers"]
        resets = []
        for pid in workers:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                resets.append(True)
            except OSError:
                resets.append(False)
        self.hwm_reset = bool(resets) and all(resets)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        roles = chatmedia_roles(self._server)
        looked = time.monotonic()
        while not self._stop.is_set():
            now = time.perf_counter()
            if not roles["fork_servers"] or time.monotonic() - looked > 1.0:
                roles, looked = chatmedia_roles(self._server), time.monotonic()
            self._sample(roles, now)
            if self.samples % self.PSS_EVERY == 0:
                self._sample_pss(roles)
            self.samples += 1
            self._stop.wait(self._interval)

    def _sample(self, roles: dict[str, list[int]], now: float) -> None:
        peaks = self.peaks
        worker_rss = 0
        for pid in roles["workers"]:
            if (figures := _status(pid)) is not None:
                worker_rss += figures[0]
                peaks["worker_hwm"] = max(peaks["worker_hwm"], figures[1])
        media_rss = 0
        alive = 0
        for server in roles["fork_servers"]:
            if (figures := _status(server)) is not None:
                media_rss += figures[0]
                peaks["fork_server_rss"] = max(peaks["fork_server_rss"], figures[0])
            for pid in children(server):
                if (figures := _status(pid)) is None:
                    continue
                alive += 1
                media_rss += figures[0]
                seen = self.children.setdefault(pid, ChildSeen(now, now))
                seen.last = now
                seen.rss_kib = max(seen.rss_kib, figures[0])
                seen.hwm_kib = max(seen.hwm_kib, figures[1])
        peaks["worker_rss"] = max(peaks["worker_rss"], worker_rss)
        peaks["media_rss_sum"] = max(peaks["media_rss_sum"], media_rss)
        peaks["all_rss_sum"] = max(peaks["all_rss_sum"], media_rss + worker_rss)
        peaks["children_at_once"] = max(peaks["children_at_once"], alive)

    def _sample_pss(self, roles: dict[str, list[int]]) -> None:
        media = 0
        for server in roles["fork_servers"]:
            media += _pss_kib(server) + sum(_pss_kib(pid) for pid in children(server))
        workers = sum(_pss_kib(pid) for pid in roles["workers"])
        self.peaks["media_pss_sum"] = max(self.peaks["media_pss_sum"], media)
        self.peaks["all_pss_sum"] = max(self.peaks["all_pss_sum"], media + workers)

    def summary(self) -> dict[str, Any]:
        """The peaks in MiB, and what was seen of the children."""
        mib = {k: round(v / 1024, 1) for k, v in self.peaks.items() if k != "children_at_once"}
        hwms = [c.hwm_kib for c in self.children.values()]
        lives = sorted((c.last - c.first) * 1000 for c in self.children.values())
        return {
            "samples": self.samples,
            "interval_ms": self._interval * 1000,
            "worker_hwm_reset": self.hwm_reset,
            "peak_mib": mib,
            "children_seen": len(hwms),
            "children_at_once": self.peaks["children_at_once"],
            "child_hwm_max_mib": round(max(hwms, default=0) / 1024, 1),
            "child_hwm_median_mib": round(sorted(hwms)[len(hwms) // 2] / 1024, 1) if hwms else 0,
            "child_seen_alive_median_ms": round(lives[len(lives) // 2], 1) if lives else 0,
        }


# --- what chatmedia says: its log and its event stream ----------------------------------------

DESCRIBED = re.compile(r"blob ([0-9a-f]{64}) described as (\w+) in (\d+) ms")


class LogWatch:
    """Reads a server's log as it grows (every `interval` s, in a thread), noting when each
    "blob … described as … in N ms" line appeared (time.perf_counter) and its N."""

    def __init__(self, path: Path, interval: float = 0.001) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-watch", daemon=True)
        self.described: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> LogWatch:
        self._offset = self._path.stat().st_size
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pending = b""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            while not self._stop.is_set():
                pending += log.read()
                now = time.perf_counter()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if match := DESCRIBED.search(line.decode(errors="replace")):
                        self.described[match.group(1)] = (now, int(match.group(3)))
                self._stop.wait(self._interval)


class MediaEvents(EventFollower[tuple[float, str]]):
    """Notes when each file's first event saying media `done` (or `failed`) arrived: its
    `file.updated`, or its `file.created` when it was described in its upload."""

    def __init__(self, address: tuple[str, int], key: str, conversation: str) -> None:
        super().__init__(address, {"Authorization": f"Bearer {key}"}, conversation)

    def note(self, event: str, file: dict[str, Any], at: float) -> tuple[float, str] | None:
        status = (file.get("media") or {}).get("processing")
        if event in ("file.created", "file.updated") and status in ("done", "failed"):
            return at, status
        return None

    def wait_all(self, file_ids: set[str], timeout: float = EVENT_TIMEOUT) -> bool:
        return super().wait_all(file_ids, timeout)


# --- the sandbox's costs, apart --------------------------------------------------------------

# Run with `python -c` and the measured code on PYTHONPATH, so that nothing of the benchmark
# is imported beforehand. It imports what chatmedia's fork server preloads, then times, for
# each photo given: the image task in a fresh fork of itself (what a sandboxed child does,
# less the confinement), the same task warm in-process, and Sandbox.run of it end to end.
# Run from `-c`, the process's __main__ has neither a name nor a path, so multiprocessing
# re-imports nothing in the children; that the server's children do (the worker's
# __main__, chatmedia.server) is timed apart, as an import in a fresh fork.
PROBE = r"""
import json, os, statistics, sys, time
import anyio
import chatmedia.media.decode, chatmedia.media.sandbox
from chatmedia.media.images import describe_image
from chatmedia.media.sandbox import Sandbox, SandboxLimits

def in_fork(work):
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        started = time.perf_counter()
        work()
        os.write(writer, repr(time.perf_counter() - started).encode())
        os._exit(0)
    os.close(writer)
    said = os.read(reader, 64)
    os.close(reader)
    os.waitpid(pid, 0)
    return float(said) * 1000

def median(values):
    return round(statistics.median(values), 1)

REPEAT = int(sys.argv[1])
result = {"main_module_import_ms": median(
    [in_fork(lambda: __import__("chatmedia.server")) for _ in range(REPEAT)])}
options = {"content_type": "image/jpeg", "max_pixels": 32_000_000, "sizes": "320,800"}

async def sandboxed(path):
    sandbox = Sandbox(SandboxLimits(), 1)
    await sandbox.run("image", path, **options)  # starts the fork server
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        await sandbox.run("image", path, **options)
        times.append((time.perf_counter() - started) * 1000)
    sandbox.close()
    return median(times)

for path in sys.argv[2:]:
    warm = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        describe_image(path, **options)
        warm.append((time.perf_counter() - started) * 1000)
    result[os.path.basename(path)] = {
        "task_in_fresh_fork_ms": median(
            [in_fork(lambda: describe_image(path, **options)) for _ in range(REPEAT)]),
        "task_warm_ms": median(warm),
        "sandbox_run_ms": anyio.run(sandboxed, path),
    }
print("PROBE " + json.dumps(result))
"""


def probe_sandbox(source: Path | None, photos: list[Path], repeat: int = 9) -> dict[str, Any]:
    """The sandbox's costs, apart (see PROBE), with `source`'s chatmedia (else the
    checkout's); medians of `repeat` in ms."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    command = [sys.executable, "-c", PROBE, str(repeat), *map(str, photos)]
    done = subprocess.run(
        command, env=env, cwd=photos[0].parent, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    found = re.search(r"^PROBE (.+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the sandbox probe failed: {done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(found.group(1))
    return result


def quietly(
    take: Callable[[], T], label: str, disturbed: list[dict[str, Any]], retries: int = RETRIES
) -> T:
    """`take()`, taken again (at most `retries` times, after waiting for a quiet machine)
    while processes outside the benchmark used more than FOREIGN_LIMIT of a core during
    it: someone else's tests on the two cores. What was thrown away is noted in
    `disturbed`."""
    for attempt in range(retries + 1):
        before, started = foreign_cpu_seconds(), time.perf_counter()
        result = take()
        load = (foreign_cpu_seconds() - before) / (time.perf_counter() - started)
        if load <= FOREIGN_LIMIT or attempt == retries:
            return result
        disturbed.append({"what": label, "others_cores": round(load, 2)})
        console.print(f"[yellow]{label}: others used {load:.2f} cores; taken again[/yellow]")
        wait_until_quiet()
    raise AssertionError("unreachable")


@dataclass
class Timeline:
    """One upload of the breakdown: when each step was seen (time.perf_counter)."""

    answered: float
    sha256: str
    file_id: str
    marks: dict[str, float] = field(default_factory=dict)
