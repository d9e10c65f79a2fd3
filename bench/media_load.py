"""Media processing under load, for bench/media.py: how many 2 MP phone photos get their
previews a second, and W3 with processing on beside off.

Previews per second: a 1600x1200 JPEG (quality 90, EXIF orientation 6, about 600 kB),
uploaded N times with bytes of its own each time by a few clients at once, as fast as
they go, to a chatmedia whose job runner makes the previews while the uploads arrive.
The `done` file.updated events on the conversation's stream say when each photo's job
finished. Three rates come of it: end to end (N over the time from the first upload
sent to the last `done`), the jobs' rate while the uploads ran, and the jobs' rate once
every upload was in (the backlog alone on the two cores).

W3 with photos: W3 of bench/run.py (wrk, 32 connections, 100 KiB uploads) where each
upload is a 1024x768 JPEG padded to exactly 100 KiB (bench/wrk_photo.lua gives each its
own bytes), against two chatmedia servers, CHATMEDIA_MEDIA_PROCESSING=true and =false,
taking turns within each run; and plain W3 (random bytes, not media) the same way. After
each run of the server with processing on, the media jobs still queued are counted (the
backlog) and timed until none is left, before anything else runs.
"""

from __future__ import annotations

import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import workloads as w
from common import busy_seconds, console
from media_parts import (
    MediaEvents,
    MediaSampler,
    chatmedia_cpu,
    chatmedia_roles,
    make_photo,
    photo_files,
    probe_sandbox,
    quietly,
)
from peers import Chatmedia, chatmedia
from run import FOREIGN_LIMIT, RETRIES, show, wait_until_quiet
from scanning import CONVERSATION, upload

PHOTO_SCRIPT = Path(__file__).resolve().parent / "wrk_photo.lua"
ON, OFF = "chatmedia-media-on", "chatmedia-media-off"
W3_PHOTO, W3_PLAIN = "W3-photo", "W3"
DRAIN_TIMEOUT = 600.0
WARM_UP = 2.0  # seconds of each W3 variant, unrecorded, per server


# --- previews per second --------------------------------------------------------------------


def previews_per_second(
    server: Chatmedia, workdir: Path, count: int, clients: int, source: Path | None
) -> dict[str, Any]:
    """`count` 2 MP photos uploaded by `clients` at once; when each one's job was done.
    Taken again when others' load disturbed it."""
    photo = make_photo(1600, 1200, quality=90, noise=10, seed=2)
    disturbed: list[dict[str, Any]] = []
    with MediaEvents(server.address, server.key, CONVERSATION) as events:
        warmed = {upload(server, path)[2]["id"] for path in photo_files(photo, workdir, 2)}
        if not events.wait_all(warmed):
            raise RuntimeError(f"no done event for the warm-up photos ({events.error})")
        wait_until_quiet()
        result = quietly(
            lambda: _rate(server, events, photo_files(photo, workdir / "phone", count), clients),
            "previews per second",
            disturbed,
        )
    probe_path = workdir / "probe-phone.jpg"
    probe_path.write_bytes(photo.variant())
    return (
        {"photo": photo.describe(), "photos": count, "clients": clients}
        | result
        | {
            "disturbed": disturbed,
            "sandbox_probe": probe_sandbox(source, [probe_path]),
        }
    )


def _rate(
    server: Chatmedia, events: MediaEvents, files: list[Path], clients: int
) -> dict[str, Any]:
    pid = server.server_pid
    count = len(files)
    with MediaSampler(pid, interval=0.005) as sampler:
        cpu_before, busy_before = chatmedia_cpu(pid), busy_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda path: upload(server, path), files))
        uploaded = time.perf_counter()
        ids = {record["id"] for _, _, record in answers}
        if not events.wait_all(ids, DRAIN_TIMEOUT):
            raise RuntimeError(f"{len(ids - events.arrived.keys())} photos never done")
        cpu_after, busy_after = chatmedia_cpu(pid), busy_seconds()
    done = sorted(events.arrived[i][0] for i in ids)
    statuses = [events.arrived[i][1] for i in ids]
    finished = done[-1]
    during = sum(1 for t in done if t <= uploaded)
    low, high = round(count * 0.1), round(count * 0.9) - 1
    return {
        "failed": statuses.count("failed"),
        "uploads_s": round(uploaded - started, 2),
        "last_done_s": round(finished - started, 2),
        "uploads_per_s": round(count / (uploaded - started), 1),
        "end_to_end_per_s": round(count / (finished - started), 1),
        "jobs_per_s_while_uploading": round(during / (uploaded - started), 1),
        "done_while_uploading": during,
        "jobs_per_s_after_uploads": (
            round((count - during) / (finished - uploaded), 1) if count - during >= 10 else None
        ),
        "jobs_per_s_middle_80pct": round((high - low) / (done[high] - done[low]), 1),
        "cpu_ms_per_photo": {
            k: round((cpu_after[k] - cpu_before[k]) * 1000 / count, 1) for k in cpu_before
        },
        "machine_busy_cores": round((busy_after - busy_before) / (finished - started), 2),
        "memory": sampler.summary(),
    }


def print_rate(r: dict[str, Any], out: Console) -> None:
    """The previews-per-second figures, for the terminal."""
    out.print(
        f"previews for {r['photos']} photos of {r['photo']['width']}x{r['photo']['height']} "
        f"({r['photo']['bytes']:,} bytes) from {r['clients']} clients: uploads "
        f"{r['uploads_per_s']}/s (in {r['uploads_s']} s), last done at {r['last_done_s']} s; "
        f"end to end {r['end_to_end_per_s']}/s, jobs {r['jobs_per_s_while_uploading']}/s "
        f"while uploading, {r['jobs_per_s_after_uploads']}/s after, "
        f"{r['jobs_per_s_middle_80pct']}/s over the middle 80 %; CPU ms a photo "
        f"{r['cpu_ms_per_photo']}; machine {r['machine_busy_cores']} cores busy; "
        f"{r['failed']} failed",
        highlight=False,
    )


# --- W3 with processing on and off ------------------------------------------------------------


class MediaServer(Chatmedia):
    """A chatmedia whose memory is its granian workers' alone: its fork server and sandboxed
    children come and go and are watched apart; their CPU is counted as `media_cpu_s`."""

    def memory_pids(self) -> list[int]:
        """The granian workers."""
        return chatmedia_roles(self.server_pid)["workers"]

    def cpu_pids(self) -> list[int]:
        """The main process, its workers and fork servers (the sandboxed children's time is
        the fork servers' reaped time, `media_cpu_s`)."""
        roles = chatmedia_roles(self.server_pid)
        return [self.server_pid, *roles["workers"], *roles["fork_servers"]]

    def stored_count(self) -> int:
        """Files in its SQLite database: a page of the API's listing of photos, with their
        previews' signed URLs, is larger than the bench client keeps of a body."""
        return stored(self)["files"]


@contextmanager
def on_and_off(
    workdir: Path, source: Path | None, settings: dict[str, str]
) -> Iterator[list[MediaServer]]:
    """Two chatmedia servers, each with its own data folder: processing on, then off."""
    with ExitStack() as stack:
        servers = []
        for name, value in ((ON, "true"), (OFF, "false")):
            root = workdir / name
            root.mkdir()
            chosen = settings | {"CHATMEDIA_MEDIA_PROCESSING": value}
            cm = stack.enter_context(chatmedia(root, None, source, chosen))
            servers.append(MediaServer(cm.server_pid, cm.data_dir, cm.address, cm.key, name=name))
        yield servers


def _count(server: Chatmedia, query: str) -> int:
    database = server.data_dir / "chatmedia.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        found: int = db.execute(query).fetchone()[0]
    return found


def stored(server: Chatmedia) -> dict[str, int]:
    """Files, blobs and media still pending (jobs queued) in the server's database."""
    return {
        "files": _count(server, "SELECT count(*) FROM files"),
        "blobs": _count(server, "SELECT count(*) FROM blobs"),
        "pending": _count(server, "SELECT count(*) FROM blobs WHERE media_status = 'pending'"),
        "jobs": _count(server, "SELECT count(*) FROM jobs WHERE kind = 'media'"),
    }


def drain(server: Chatmedia) -> float:
    """Wait until no media job is queued; the seconds it took."""
    started = time.perf_counter()
    while stored(server)["jobs"]:
        if time.perf_counter() - started > DRAIN_TIMEOUT:
            raise RuntimeError(f"{server.name}: media jobs still queued after {DRAIN_TIMEOUT} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def w3_photo(server: Chatmedia, photo: Path, token: str, duration: float) -> w.Outcome:
    """W3's 32 connections uploading the 100 KiB photo, each time with its own bytes; the
    files and blobs stored are counted (each upload must be a new blob), and the media
    still pending when wrk stops."""
    before = stored(server)
    args = [str(photo), token, secrets.token_hex(6)]
    figures = w.run_wrk(
        server.address, "/v1/files", w.W3_CONNECTIONS, duration, args,
        dict(server.upload_auth), script=PHOTO_SCRIPT,
    )  # fmt: skip
    after = stored(server)
    outcome = w._wrk_outcome(figures, "uploads_per_s")
    new = {k: after[k] - before[k] for k in ("files", "blobs")}
    notes = list(outcome.notes)
    if new["files"] < figures["requests"] or new["blobs"] != new["files"]:
        notes.append(f"{figures['requests']} uploads answered, stored {new}")
    raw = outcome.raw | {"stored": new, "at_end": after}
    return w.Outcome(outcome.metrics, ok=not notes, notes=tuple(notes), raw=raw)


def measured(
    workload: str, server: MediaServer, run: int, body: Callable[[], w.Outcome]
) -> w.Sample:
    """`body` measured (bench/workloads.measure), with the media processes' CPU time; with
    processing on, then the backlog's drain."""

    def counted() -> w.Outcome:
        before = chatmedia_cpu(server.server_pid)["media"]
        outcome: w.Outcome = body()
        used = round(chatmedia_cpu(server.server_pid)["media"] - before, 2)
        return replace(outcome, raw=outcome.raw | {"media_cpu_s": used})

    wait_until_quiet()
    media_before = chatmedia_cpu(server.server_pid)["media"]
    sample = w.measure(workload, server, run, counted)
    if server.name == ON:
        backlog = stored(server)
        seconds = drain(server)
        used = chatmedia_cpu(server.server_pid)["media"] - media_before
        sample.raw |= {
            "backlog_at_end": backlog["jobs"],
            "drain_s": round(seconds, 2),
            "media_cpu_s_with_drain": round(used, 2),
        }
    return sample


def w3_on_off(
    workdir: Path, source: Path | None, settings: dict[str, str], runs: int, duration: float
) -> dict[str, Any]:
    """W3 with photos and plain W3 against processing on and off, in turns."""
    photo = make_photo(1024, 768, quality=80, noise=6, seed=3, size=w.UPLOAD_FILE)
    path = workdir / "w3-photo.jpg"
    path.write_bytes(photo.data)
    token = photo.token.decode()

    def photos(server: MediaServer, seconds: float) -> w.Outcome:
        return w3_photo(server, path, token, seconds)

    bodies: dict[str, Callable[[MediaServer, float], w.Outcome]] = {
        W3_PHOTO: photos,
        W3_PLAIN: w.w3,
    }
    samples: list[w.Sample] = []
    disturbed: list[w.Sample] = []
    with on_and_off(workdir, source, settings) as (on, off):
        for server in (on, off):
            for body in bodies.values():
                body(server, WARM_UP)
            drain(server)
        console.print("W3 warm-up done")
        for run in range(1, runs + 1):
            for workload, body in bodies.items():
                for server in (on, off) if run % 2 else (off, on):
                    for attempt in range(RETRIES + 1):
                        sample = measured(workload, server, run, partial(body, server, duration))
                        show(sample)
                        foreign = sample.foreign_cpu_s / max(sample.wall_s, 0.001)
                        if foreign <= FOREIGN_LIMIT or attempt == RETRIES:
                            break
                        sample.notes.append(f"others used {foreign:.2f} cores: taken again")
                        disturbed.append(sample)
                    if "backlog_at_end" in sample.raw:
                        console.print(
                            f"  backlog {sample.raw['backlog_at_end']} jobs, drained in "
                            f"{sample.raw['drain_s']} s",
                            highlight=False,
                        )
                    samples.append(sample)
    probe_path = workdir / "probe-w3.jpg"
    probe_path.write_bytes(photo.variant())
    return {
        "photo": photo.describe(),
        "summary": summarise(samples),
        "sandbox_probe": probe_sandbox(source, [probe_path]),
        "samples": [asdict(s) for s in samples],
        "disturbed_samples": [asdict(s) for s in disturbed],
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}  # fmt: skip


def summarise(samples: list[w.Sample]) -> dict[str, Any]:
    """Per variant and server: uploads/s and p99 (median, min-max over the runs), on/off
    within each run, the backlog and its drain, CPU per upload."""
    found: dict[str, Any] = {}
    for workload in (W3_PHOTO, W3_PLAIN):
        chosen = [s for s in samples if s.workload == workload]
        by_server: dict[str, Any] = {}
        for name in (ON, OFF):
            taken = [s for s in chosen if s.peer == name]
            if not taken:
                continue
            # A sample still disturbed after its retakes counts only if none is quiet.
            mine = [s for s in taken if _quiet(s)] or taken
            uploads = [s.raw["wrk"]["requests"] for s in mine]
            # With processing on, the jobs the drain ran after wrk stopped count too.
            media = [s.raw.get("media_cpu_s_with_drain", s.raw["media_cpu_s"]) for s in mine]
            entry = {
                "uploads_per_s": _spread([s.metrics["uploads_per_s"] for s in mine]),
                "p99_ms": _spread([s.metrics["p99_ms"] for s in mine]),
                "worker_cpu_ms_per_upload": _spread(
                    [
                        (s.server_user_s + s.server_system_s) * 1000 / n
                        for s, n in zip(mine, uploads, strict=True)
                    ]
                ),
                "media_cpu_ms_per_upload": _spread(
                    [m * 1000 / n for m, n in zip(media, uploads, strict=True)]
                ),
                "worker_peak_rss_mib": max(s.peak_rss_mib for s in mine),
                "all_ok": all(s.ok for s in mine),
                "runs_counted": [s.run for s in mine],
            }
            if name == ON:
                entry["backlog_at_end"] = [s.raw["backlog_at_end"] for s in mine]
                entry["drain_s"] = [s.raw["drain_s"] for s in mine]
            by_server[name] = entry
        pairs = [
            (a.metrics["uploads_per_s"], b.metrics["uploads_per_s"])
            for a in chosen if a.peer == ON and _quiet(a)
            for b in chosen if b.peer == OFF and b.run == a.run and _quiet(b)
        ]  # fmt: skip
        if pairs:
            by_server["on_over_off"] = _spread([a / b for a, b in pairs])
        found[workload] = by_server
    return found


def _quiet(sample: w.Sample) -> bool:
    return sample.foreign_cpu_s / max(sample.wall_s, 0.001) <= FOREIGN_LIMIT


def print_w3(r: dict[str, Any], out: Console) -> None:
    """W3 with processing on and off, for the terminal."""
    table = Table(title="W3 with processing on and off (median (min-max) over the runs)")
    for column in ("variant", "server", "uploads/s", "p99 ms", "worker CPU ms/upload",
                   "media CPU ms/upload", "backlog at end", "drain s"):  # fmt: skip
        table.add_column(column, justify="right")
    for workload, by_server in r["summary"].items():
        for name in (ON, OFF):
            if name not in by_server:
                continue
            x = by_server[name]
            table.add_row(
                workload, name, _cell(x["uploads_per_s"]), _cell(x["p99_ms"]),
                _cell(x["worker_cpu_ms_per_upload"]), _cell(x["media_cpu_ms_per_upload"]),
                str(x.get("backlog_at_end", "")), str(x.get("drain_s", "")),
            )  # fmt: skip
        if "on_over_off" in by_server:
            table.add_row(workload, "on / off", _cell(by_server["on_over_off"]), "", "", "", "", "")
    out.print(table)


def _cell(spread: dict[str, float]) -> str:
    return f"{spread['median']:g} ({spread['min']:g}-{spread['max']:g})"
