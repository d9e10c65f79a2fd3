"""Media processing: W6, the delay from a 12 MP photo's upload to its 320 px preview,
against Synapse's thumbnail of the same photo; how many 2 MP phone photos get previews a
second; and W3 with processing on beside off.

Servers on 127.0.0.1, all on the machine's two cores with the client:

- chatmedia (local store, SQLite, one worker, CHATMEDIA_MEDIA_WORKERS at its default);
- Synapse (bench/peers.py) making thumbnails as it stores an upload, before it answers,
  at the sizes chatmedia makes (scale into 320x320 and 800x800; Synapse's default list has
  five sizes, so this is less work than it does by default);
- `synapse-on-request`: a second Synapse with `dynamic_thumbnails` and no sizes made at
  upload, which makes a thumbnail when one is first asked for, as chatmedia's preview
  route does when its job has not run yet. Synapse's thumbnail route asks for PNG.

W6: each upload is a 4000x3000 JPEG (quality 90, 3.7 MB, EXIF orientation 6, bench/
media_parts.py) with bytes of its own. From the moment the upload's answer arrives, the
client asks for the 320 px preview (chatmedia: GET /v1/files/{id}/preview?size=320;
Synapse: the authenticated /_matrix/client/v1/media/thumbnail/localhost/{id}?width=320&
height=320&method=scale) again as soon as an answer is not a 200 with an image, 5 ms apart,
until one is. Each upload gives three times: the upload's (connect to answer), W6 from the
answer (the issue's wording) and W6 from the upload's last byte sent, which also counts
what a server does before it answers: Synapse makes its thumbnails there. "Alone" is one
upload at a time, the peers taking turns; "4 at once" is four loops of upload-and-wait
side by side, one peer at a time. Meanwhile /proc is sampled every 3 ms: chatmedia's
worker, its fork server and the sandboxed children, and Synapse's process. A client
follows chatmedia's conversation's event stream throughout, as a chat client would: the
`done` event tells how long after it each preview was served (at once when the preview
request ran the job itself; up to a poll of the route later when the job runner did).

The breakdown: more uploads to chatmedia, one at a time, with the sampler (when the
sandboxed child appears and goes), the server's log ("described as image in N ms") and
the conversation's event stream (the `done` file.updated) watched, and a probe that
times the sandbox's parts apart (bench/media_parts.py, PROBE).

Previews per second and W3 with processing on and off: bench/media_load.py.

    .venv/bin/python bench/media.py [--at-commit HEAD] [--uploads 20] [--only w6,rate,w3]

chatmedia describes a new photo before its upload answers (chatmedia.media.inline); with
`--inline-timeout 0` it does so after, in its media job, as it does for video.

`--chatmedia-src DIR` runs a changed copy of src/ instead (to try a change before making
it). A measurement during which processes outside the benchmark used more than 0.1 of a
core is taken again, with new bytes. Raw figures go to bench/results/media-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import media_load
import peers
import tools
from client import Body, multipart_file, request
from common import (
    RssSampler,
    console,
    exit_on_sigterm,
    export_source,
    filesystem_of,
    foreign_cpu_seconds,
    machine,
    save_json,
    source_state,
    suspicious_lines,
)
from media_parts import (
    LogWatch,
    MediaEvents,
    MediaSampler,
    Photo,
    Timeline,
    chatmedia_cpu,
    make_photo,
    photo_files,
    probe_sandbox,
    process_cpu_seconds,
    quietly,
)
from run import LIMITS_NEVER_REACHED, wait_for_quiet, wait_until_quiet
from scanning import spread_ms

CONVERSATION = "bench-media"
BOX = 320
POLL_SECONDS = 0.005  # between two asks for a preview that was not there yet
PREVIEW_TIMEOUT = 120.0
SETTLE = 0.3  # seconds between two uploads one at a time
AT_ONCE = 4
ONE_RETRIES = 4  # times one disturbed upload is taken again (a whole phase: run.RETRIES)
REQUIRED, GOAL = 0.33, 0.2  # W6 p50, chatmedia / Synapse
SYNAPSE_SIZES = [{"width": s, "height": s, "method": "scale"} for s in (320, 800)]
SYNAPSES = {
    "synapse": {"thumbnail_sizes": SYNAPSE_SIZES, "dynamic_thumbnails": False},
    "synapse-on-request": {"thumbnail_sizes": [], "dynamic_thumbnails": True},
}
PHASES = ("w6", "rate", "w3")
REPORT_WIDTH = 150


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=20, help="W6 uploads per peer and mode")
    parser.add_argument("--breakdown", type=int, default=12, help="uploads of the breakdown")
    parser.add_argument(
        "--inline-timeout",
        help="chatmedia's CHATMEDIA_MEDIA_INLINE_TIMEOUT (0: previews always after the answer)",
    )
    parser.add_argument("--phone-photos", type=int, default=200, help="2 MP photos (200)")
    parser.add_argument("--phone-clients", type=int, default=8, help="uploading at once (8)")
    parser.add_argument("--w3-runs", type=int, default=3, help="runs of each W3 variant (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per W3 run (10)")
    parser.add_argument("--only", default=",".join(PHASES), help="phases: w6,rate,w3")
    parser.add_argument("--quick", action="store_true", help="smoke test: a little of each")
    parser.add_argument(
        "--at-commit", metavar="REV", default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )  # fmt: skip
    parser.add_argument(
        "--chatmedia-src", metavar="DIR", type=Path, default=None,
        help="run the chatmedia package found in DIR (a changed copy of src/) instead",
    )  # fmt: skip
    parser.add_argument("--synapse-version", default=tools.SYNAPSE_VERSION)
    parser.add_argument(
        "--wait-load", type=float, default=0.5,
        help="wait until the 1-minute load average is below this (0.5; 0 to skip)",
    )  # fmt: skip
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    args.phases = [p.strip().lower() for p in args.only.split(",") if p.strip()]
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phase {', '.join(sorted(unknown))}; choose from {PHASES}")
    if args.quick:
        args.uploads, args.breakdown, args.phone_photos = 4, 3, 24
        args.w3_runs, args.duration = 1, 3.0
    if args.uploads < AT_ONCE or args.uploads % AT_ONCE:
        parser.error(f"--uploads must be a multiple of {AT_ONCE}")
    if args.at_commit and args.chatmedia_src:
        parser.error("--at-commit and --chatmedia-src exclude each other")
    if args.chatmedia_src and not (args.chatmedia_src / "chatmedia").is_dir():
        parser.error(f"{args.chatmedia_src} holds no chatmedia package")
    return args


# --- the peers, as W6 sees them -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A server W6 uploads to: chatmedia's API or Synapse's media repository."""

    name: str
    address: tuple[str, int]
    token: str
    pid: int  # chatmedia: the server's main process; Synapse: its one process

    @property
    def is_chatmedia(self) -> bool:
        """Whether this is chatmedia (else a Synapse)."""
        return self.name == "chatmedia"

    @property
    def auth(self) -> dict[str, str]:
        """The key or access token."""
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True, slots=True)
class Timing:
    """One upload and its preview (time.perf_counter, seconds)."""

    started: float
    sent: float
    answered: float
    served: float
    asks: int
    preview_bytes: int
    ref: str

    def figures(self) -> dict[str, Any]:
        """The three durations, in ms."""
        return {
            "upload_ms": round((self.answered - self.started) * 1000, 1),
            "w6_ms": round((self.served - self.answered) * 1000, 1),
            "from_sent_ms": round((self.served - self.sent) * 1000, 1),
            "asks": self.asks,
            "preview_bytes": self.preview_bytes,
        }


def upload(target: Target, path: Path) -> tuple[float, float, float, str, str, str]:
    """Upload the photo at `path`; when it started, when its last byte left, when the
    answer arrived (perf_counter), where its 320 px preview is, its id and SHA-256."""
    if target.is_chatmedia:
        boundary = secrets.token_hex(16)
        field = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="conversationId"\r\n\r\n'
            f"{CONVERSATION}\r\n"
        ).encode()
        file = multipart_file(path, boundary, "photo.jpg")
        content_type = f"multipart/form-data; boundary={boundary}"
        body = Body(field + file.prefix, path, file.suffix)
        target_path, ok = "/v1/files", 201
    else:
        content_type, body = "image/jpeg", Body(path=path)
        target_path, ok = "/_matrix/media/v3/upload?filename=photo.jpg", 200
    headers = target.auth | {"Content-Type": content_type}
    started = time.perf_counter()
    response = request(target.address, "POST", target_path, headers, body)
    answered = time.perf_counter()
    if response.status != ok:
        raise RuntimeError(f"{target.name}: upload answered {response.status}: {response.body!r}")
    said = response.json()
    if target.is_chatmedia:
        if (said.get("media") or {}).get("processing") not in ("pending", "done"):
            raise RuntimeError(f"chatmedia: a new photo is not described: {said.get('media')}")
        preview = f"/v1/files/{said['id']}/preview?size={BOX}"
        ref, sha256 = said["id"], said["sha256"]
    else:
        server, ref = said["content_uri"].removeprefix("mxc://").split("/", 1)
        preview = f"/_matrix/client/v1/media/thumbnail/{server}/{ref}"
        preview += f"?width={BOX}&height={BOX}&method=scale"
        sha256 = ""
    return started, response.extra["sent_at"], answered, preview, ref, sha256


def wait_preview(target: Target, preview: str) -> tuple[float, int, int]:
    """Ask for the preview until it is served; when (perf_counter), asks, its bytes."""
    deadline = time.monotonic() + PREVIEW_TIMEOUT
    asks = 0
    while True:
        asks += 1
        response = request(target.address, "GET", preview, target.auth)
        served = time.perf_counter()
        kind = response.headers.get("content-type", "")
        if response.status == 200 and kind.startswith("image/"):
            return served, asks, response.received
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target.name}: no preview at {preview}: {response.status}")
        time.sleep(POLL_SECONDS)


def upload_and_wait(target: Target, path: Path) -> Timing:
    """One W6 measurement."""
    started, sent, answered, preview, ref, _ = upload(target, path)
    served, asks, size = wait_preview(target, preview)
    return Timing(started, sent, answered, served, asks, size, ref)


# --- W6 -----------------------------------------------------------------------------------


class Watch:
    """The memory and CPU of every target while a phase runs."""

    def __init__(self, targets: list[Target]) -> None:
        self._targets = targets
        self._stack = ExitStack()
        self.samplers: dict[str, MediaSampler | RssSampler] = {}
        self._cpu: dict[str, float] = {}

    def __enter__(self) -> Watch:
        for t in self._targets:
            if t.is_chatmedia:
                self.samplers[t.name] = self._stack.enter_context(MediaSampler(t.pid))
            else:
                self.samplers[t.name] = self._stack.enter_context(RssSampler([t.pid]))
            self._cpu[t.name] = self._cpu_now(t)
        self._foreign = foreign_cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()
        self.wall = time.perf_counter() - self._started
        self.foreign_cpu_s = round(foreign_cpu_seconds() - self._foreign, 2)
        self.cpu_s = {t.name: round(self._cpu_now(t) - self._cpu[t.name], 2)
                      for t in self._targets}  # fmt: skip

    @staticmethod
    def _cpu_now(target: Target) -> float:
        if target.is_chatmedia:
            return sum(chatmedia_cpu(target.pid).values())
        return process_cpu_seconds(target.pid)

    def memory(self, name: str) -> dict[str, Any]:
        """The target's memory figures over the phase."""
        sampler = self.samplers[name]
        if isinstance(sampler, MediaSampler):
            return sampler.summary()
        return {"peak_rss_mib": round(sampler.peak_kib / 1024, 1),
                "vm_hwm_mib": round(sampler.hwm_kib / 1024, 1),
                "hwm_reset": sampler.hwm_reset}  # fmt: skip


def alone(
    targets: list[Target],
    photo: Photo,
    folder: Path,
    count: int,
    disturbed: list[dict[str, Any]],
    events: MediaEvents,
) -> dict[str, Any]:
    """`count` uploads to each target, one at a time, the targets taking turns (whose turn
    comes first alternating); an upload disturbed by others' load is taken again."""
    timings: dict[str, list[Timing]] = {t.name: [] for t in targets}
    taken = dict.fromkeys(timings, 0)
    wait_until_quiet()
    with Watch(targets) as watch:
        for n in range(count):
            order = targets if n % 2 == 0 else targets[::-1]
            for target in order:

                def take(target: Target = target) -> Timing:
                    taken[target.name] += 1
                    path = photo_files(photo, folder / target.name, 1)[0]
                    return upload_and_wait(target, path)

                timings[target.name].append(
                    quietly(take, f"W6 alone {target.name}", disturbed, ONE_RETRIES)
                )
                time.sleep(SETTLE)
    return phase_result(targets, timings, watch, taken, events)


def at_once(
    targets: list[Target],
    photo: Photo,
    folder: Path,
    count: int,
    disturbed: list[dict[str, Any]],
    events: MediaEvents,
) -> dict[str, Any]:
    """AT_ONCE loops of upload-and-wait side by side, `count` uploads in all, one target
    after the other; each target's figures come with the watch of its own turn, which is
    taken again when others' load disturbed it."""
    result: dict[str, Any] = {}
    for target in targets:

        def take(target: Target = target) -> dict[str, Any]:
            files = photo_files(photo, folder / f"{target.name}-at-once", count)
            with Watch([target]) as watch:
                timings = side_by_side(target, [files[i::AT_ONCE] for i in range(AT_ONCE)])
            if len(timings) != count:
                raise RuntimeError(f"{target.name}: {len(timings)} of {count} at once done")
            taken = {target.name: count}
            return phase_result([target], {target.name: timings}, watch, taken, events)

        wait_until_quiet()
        result |= quietly(take, f"W6 {AT_ONCE} at once {target.name}", disturbed)
        time.sleep(1.0)
    return result


def side_by_side(target: Target, loops: list[list[Path]]) -> list[Timing]:
    """One thread per loop, each uploading its photos one after the other and waiting for
    each one's preview; they start together."""
    timings: list[Timing] = []
    lock = threading.Lock()
    start = threading.Barrier(len(loops))

    def loop(paths: list[Path]) -> None:
        start.wait()
        for path in paths:
            timing = upload_and_wait(target, path)
            with lock:
                timings.append(timing)

    threads = [threading.Thread(target=loop, args=(paths,)) for paths in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def phase_result(
    targets: list[Target],
    timings: dict[str, list[Timing]],
    watch: Watch,
    taken: dict[str, int],
    events: MediaEvents,
) -> dict[str, Any]:
    """Each target's spreads of the three durations, its memory and CPU per upload (over
    every upload `taken`, those taken again included). For chatmedia, also how long after
    the `done` event each preview was served: at once when the preview request made it
    itself (it claimed the job first), up to a poll later when the job runner did."""
    result: dict[str, Any] = {}
    for t in targets:
        measured = timings[t.name]
        result[t.name] = {
            "upload": spread_ms([m.answered - m.started for m in measured]),
            "w6": spread_ms([m.served - m.answered for m in measured]),
            "from_sent": spread_ms([m.served - m.sent for m in measured]),
            "memory": watch.memory(t.name),
            "cpu_ms_per_upload": round(watch.cpu_s[t.name] * 1000 / taken[t.name], 1),
            "foreign_cpu_s": watch.foreign_cpu_s,
            "wall_s": round(watch.wall, 1),
            "uploads": [m.figures() for m in measured],
        }
        if t.is_chatmedia:
            events.wait_all({m.ref for m in measured}, 30)
            late = [
                m.served - events.arrived[m.ref][0] for m in measured if m.ref in events.arrived
            ]
            result[t.name]["done_to_served"] = spread_ms(late)
            result[t.name]["served_within_5ms_of_done"] = sum(1 for s in late if s < 0.005)
    return result


def ratios(w6: dict[str, Any]) -> dict[str, Any]:
    """chatmedia's p50 over each Synapse's, for each mode and each way of timing."""
    found: dict[str, Any] = {}
    for mode in ("alone", "at_once"):
        cm = w6[mode]["chatmedia"]
        for peer in SYNAPSES:
            if peer not in w6[mode]:
                continue
            other = w6[mode][peer]
            for measure in ("w6", "from_sent"):
                ratio = cm[measure]["p50_ms"] / other[measure]["p50_ms"]
                verdict = "PASS" if ratio <= REQUIRED else "MISS"
                if ratio <= GOAL:
                    verdict += " (goal met)"
                found[f"{mode}/{peer}/{measure}"] = {"ratio": round(ratio, 3), "verdict": verdict}
    return found


# --- the breakdown --------------------------------------------------------------------------


def breakdown(
    cm: Target,
    log_path: Path,
    photo: Photo,
    folder: Path,
    count: int,
    disturbed: list[dict[str, Any]],
) -> dict[str, Any]:
    """Where the time of W6 goes in chatmedia, upload by upload, one at a time: when the
    sandboxed child appeared and was last seen, when the log said "described", when the
    `done` event arrived, when the preview was served."""
    lines: list[Timeline] = []

    def take() -> Timeline:
        path = photo_files(photo, folder / "breakdown", 1)[0]
        _, _, answered, preview, ref, sha256 = upload(cm, path)
        served, _, _ = wait_preview(cm, preview)
        return Timeline(answered, sha256, ref, {"served": served})

    wait_until_quiet()
    with (
        MediaEvents(cm.address, cm.token, CONVERSATION) as events,
        LogWatch(log_path, interval=0.002) as log,
        MediaSampler(cm.pid, interval=0.005) as sampler,
    ):
        for _ in range(count):
            lines.append(quietly(take, "W6 breakdown", disturbed, ONE_RETRIES))
            time.sleep(SETTLE)
        events.wait_all({line.file_id for line in lines})
    for line in lines:
        forked = [c for c in sampler.children.values() if line.answered <= c.first]
        if forked:
            child = min(forked, key=lambda c: c.first)
            line.marks |= {"child_seen": child.first, "child_last_seen": child.last}
        if line.sha256 in log.described:
            line.marks["described"] = log.described[line.sha256][0]
        if line.file_id in events.arrived:
            line.marks["done_event"] = events.arrived[line.file_id][0]
    steps = [
        ("answer to child forked", "answered", "child_seen"),
        ("child alive (seen)", "child_seen", "child_last_seen"),
        ("child gone to 'described' logged", "child_last_seen", "described"),
        ("'described' to done event", "described", "done_event"),
        ("done event to preview served", "done_event", "served"),
        ("answer to preview served (W6)", "answered", "served"),
    ]
    spans: dict[str, Any] = {}
    for label, first, then in steps:
        values = [
            line.marks[then] - (line.answered if first == "answered" else line.marks[first])
            for line in lines
            if then in line.marks and (first == "answered" or first in line.marks)
        ]
        if values:
            spans[label] = spread_ms(values)
    said = [log.described[line.sha256][1] / 1000 for line in lines if line.sha256 in log.described]
    if said:
        spans["'described in N ms' (the sandbox's run, as the job times it)"] = spread_ms(said)
    late = [line.marks["served"] - line.marks["done_event"] for line in lines
            if "done_event" in line.marks]  # fmt: skip
    return {
        "uploads": count,
        "sampler": sampler.summary(),
        "spans": spans,
        "served_within_5ms_of_done": sum(1 for s in late if s < 0.005),
    }


# --- the run --------------------------------------------------------------------------------


@contextmanager
def w6_peers(workdir: Path, cm: Target, synapse_python: Path) -> Iterator[list[Target]]:
    """chatmedia (already running) and the Synapses, stopped at the end."""
    with ExitStack() as stack:
        targets = [cm]
        for name, config in SYNAPSES.items():
            console.print(f"starting {name} (takes a few seconds)")
            folder = workdir / name
            folder.mkdir()
            syn = stack.enter_context(peers.synapse(folder, synapse_python, config=config))
            targets.append(Target(name, syn.address, syn.token, syn.pid))
        yield targets


def run_w6(
    args: argparse.Namespace, workdir: Path, cm: Target, log_path: Path, source: Path | None
) -> dict[str, Any]:
    """W6 alone and 4 at once, the ratios, the breakdown and the sandbox probe."""
    synapse_python = tools.ensure_synapse(args.synapse_version)
    console.print("making the 12 MP photo")
    photo = make_photo(4000, 3000, quality=90, noise=10, seed=6)
    with w6_peers(workdir, cm, synapse_python) as targets:
        for target in targets:  # untimed: connections, caches, Synapse's thread pool warm
            for path in photo_files(photo, workdir / "warm" / target.name, 2):
                upload_and_wait(target, path)
        disturbed: list[dict[str, Any]] = []
        result: dict[str, Any] = {"photo": photo.describe(), "disturbed": disturbed}
        with MediaEvents(cm.address, cm.token, CONVERSATION) as events:
            found = alone(targets, photo, workdir / "alone", args.uploads, disturbed, events)
            result["alone"] = found
            show_w6("alone", found)
            found = at_once(targets, photo, workdir / "at-once", args.uploads, disturbed, events)
            result["at_once"] = found
            show_w6(f"{AT_ONCE} at once", found)
    result["ratios"] = ratios(result)
    result["breakdown"] = breakdown(cm, log_path, photo, workdir, args.breakdown, disturbed)
    probe_path = workdir / "probe-w6.jpg"
    probe_path.write_bytes(photo.variant())
    result["sandbox_probe"] = probe_sandbox(source, [probe_path])
    return result


def show_w6(mode: str, found: dict[str, Any]) -> None:
    """One line per peer, as it happens."""
    for name, r in found.items():
        console.print(
            f"W6 {mode}: {name:<19} upload p50 {r['upload']['p50_ms']} ms; from the answer "
            f"p50 {r['w6']['p50_ms']} p95 {r['w6']['p95_ms']} ms; from the last byte sent "
            f"p50 {r['from_sent']['p50_ms']} p95 {r['from_sent']['p95_ms']} ms",
            highlight=False,
        )
        if "done_to_served" in r:
            console.print(
                f"  served {r['done_to_served']['p50_ms']} ms after the done event (p50); "
                f"{r['served_within_5ms_of_done']} of {r['done_to_served']['n']} within 5 ms",
                highlight=False,
            )


def main() -> None:
    """Install, start, measure, report, save."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    tools.ensure_apt_packages()
    quiet = wait_for_quiet(args.wait_load, 300.0)
    source = args.chatmedia_src.resolve() if args.chatmedia_src else None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state() | {"chatmedia_src": str(source) if source else None}
    started_at = datetime.now(UTC)
    settings = {"CHATMEDIA_" + k.upper(): v for k, v in LIMITS_NEVER_REACHED.items()}
    if args.inline_timeout is not None:
        settings["CHATMEDIA_MEDIA_INLINE_TIMEOUT"] = args.inline_timeout
    found: dict[str, Any] = {}
    try:
        measure(args, source, settings, found)
    except BaseException:
        # What was measured before the failure is kept, marked as such.
        if found:
            found["incomplete"] = traceback.format_exc()
            saved = save_json("media", header(args, started_at, quiet, code, settings) | found)
            console.print(f"[red]failed; what was measured is in {saved}[/red]")
        raise
    document = header(args, started_at, quiet, code, settings) | found
    saved = save_json("media", document)
    print_report(document)
    console.print(f"raw results: {saved}")


def measure(
    args: argparse.Namespace, source: Path | None, settings: dict[str, str], found: dict[str, Any]
) -> None:
    """Each phase chosen, its results put in `found` as they come."""
    with tempfile.TemporaryDirectory(prefix="chatmedia-media-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        (workdir / "chatmedia").mkdir()
        if "w6" in args.phases or "rate" in args.phases:
            with peers.chatmedia(workdir / "chatmedia", None, source, settings) as server:
                cm = Target("chatmedia", server.address, server.key, server.server_pid)
                log_path = workdir / "chatmedia" / "server.log"
                if "w6" in args.phases:
                    found["w6"] = run_w6(args, workdir, cm, log_path, source)
                if "rate" in args.phases:
                    found["previews_per_s"] = media_load.previews_per_second(
                        server, workdir, args.phone_photos, args.phone_clients, source
                    )
                    media_load.print_rate(found["previews_per_s"], console)
                found["chatmedia_log_warnings"] = suspicious_lines(log_path)
        if "w3" in args.phases:
            found["w3"] = media_load.w3_on_off(
                workdir, source, settings, args.w3_runs, args.duration
            )


def header(
    args: argparse.Namespace,
    started_at: datetime,
    quiet: dict[str, Any],
    code: dict[str, Any],
    settings: dict[str, str],
) -> dict[str, Any]:
    """What every result file says first: what ran, where, on which code, how."""
    return {
        "benchmark": "media",
        "date": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine(),
        "load": quiet | {"loadavg_at_end": list(os.getloadavg())},
        "source": code,
        "tools": tools.tool_versions(
            tools.ensure_synapse(args.synapse_version) if "w6" in args.phases else None
        ),
        "data_filesystem": filesystem_of(Path(args.tmp_dir or tempfile.gettempdir())),
        "settings": {
            "uploads": args.uploads,
            "at_once": AT_ONCE,
            "breakdown": args.breakdown,
            "poll_ms": POLL_SECONDS * 1000,
            "box": BOX,
            "synapses": SYNAPSES,
            "phone_photos": args.phone_photos,
            "phone_clients": args.phone_clients,
            "w3_runs": args.w3_runs,
            "duration_s": args.duration,
            "chatmedia_settings": settings,
        },
        "units": {"time": "ms", "memory": "MiB", "rates": "per second"},
    }


# --- the report -----------------------------------------------------------------------------


def print_report(document: dict[str, Any]) -> None:
    """The figures, for the terminal (wide enough for the tables when it is a file)."""
    out = Console(width=max(console.width, REPORT_WIDTH))
    if "w6" in document:
        _report_w6(document["w6"], out)
    if "previews_per_s" in document:
        media_load.print_rate(document["previews_per_s"], out)
    if "w3" in document:
        media_load.print_w3(document["w3"], out)


def _report_w6(w6: dict[str, Any], out: Console) -> None:
    table = Table(title=f"W6: a 12 MP JPEG's {BOX} px preview (ms; p50 / p95)")
    for column in ("peer", "mode", "upload", "from the answer", "from the last byte sent",
                   "CPU/upload"):  # fmt: skip
        table.add_column(column, justify="right")
    for mode in ("alone", "at_once"):
        for name, r in w6[mode].items():
            table.add_row(
                name, mode.replace("_", " "), _pair(r["upload"]), _pair(r["w6"]),
                _pair(r["from_sent"]), f"{r['cpu_ms_per_upload']}",
            )  # fmt: skip
    out.print(table)
    table = Table(title=f"W6 p50, chatmedia / Synapse (required ≤ {REQUIRED}, goal ≤ {GOAL})")
    for column in ("mode / peer / timed", "ratio", "verdict"):
        table.add_column(column)
    for key, r in w6["ratios"].items():
        table.add_row(key, f"{r['ratio']:.2f}x", r["verdict"])
    out.print(table)
    table = Table(title="memory during W6 (MiB)")
    for column in ("peer", "mode", "figures"):
        table.add_column(column)
    for mode in ("alone", "at_once"):
        for name, r in w6[mode].items():
            m = r["memory"]
            figures = ", ".join(f"{k} {v}" for k, v in (m.get("peak_mib") or m).items())
            if "child_hwm_max_mib" in m:
                figures += (f"; child VmHWM max {m['child_hwm_max_mib']}, "
                            f"{m['children_at_once']} children at once")  # fmt: skip
            table.add_row(name, mode, figures)
    out.print(table)
    table = Table(title="where chatmedia's W6 goes, one upload at a time (ms)")
    for column in ("step", "p50", "p95"):
        table.add_column(column, justify="right")
    for label, r in w6["breakdown"]["spans"].items():
        table.add_row(label, f"{r['p50_ms']}", f"{r['p95_ms']}")
    out.print(table)
    out.print(f"sandbox probe: {w6['sandbox_probe']}", highlight=False)


def _pair(spread: dict[str, float]) -> str:
    return f"{spread['p50_ms']} / {spread['p95_ms']}"


if __name__ == "__main__":
    main()
