"""W7, how cost grows with the number of files: the same chatmedia server (SQLite and local
disk, the default backend) measured with 1,000 files in its database, then with 1,000,000
files spread over 10,000 conversations. The target: within 10 % of the 1,000-file figures.

For each database size:

- downloads: wrk, 64 connections, keyed GETs of 64 KiB files picked at random among many
  ids (bench/wrk_paths.lua reads a list of paths), as W2 of bench/run.py but not one hot
  row; requests/s and p50/p99 latency. At the small size every file is picked from, at the
  large one a sample of `--sample-ids` (1,000: the same working set). Each worker keeps
  the records of the files it served last in memory (CHATMEDIA_CACHE_FILES, 4,096), so
  these are cache hits at both sizes; `--chatmedia-setting CACHE_FILES=0` sends every
  download to the database, and `--sample-ids 100000` measures a working set larger than
  the cache;
- uploads: wrk, 32 connections, 100 KiB each of bytes of its own (W3, bench/wrk.lua);
- listing: one conversation read page by page, `GET /v1/files?conversationId=…&limit=100`
  following `nextCursor`, one client on a kept-alive connection; time per page (p50, p99,
  mean) and per whole listing. The listed conversation holds every file of the small
  database (1,000: 10 pages) and 10,000 of the large one (100 pages), its rows interleaved
  with the other conversations' as they would arrive; per-page figures are compared.

The database is seeded while the server is stopped, with sqlite3's executemany straight into
the `files` table (copies of a row the API made, so every column is as the server writes it),
all referencing one 64 KiB blob whose bytes are in the store: downloads work, and what grows
is the metadata, not the bytes (1M distinct blobs would not fit the page cache). The uploads
of W3 stay in the database (thousands at the small size; their count is in each sample).
Raw figures, query plans and database sizes go to bench/results/scale-<date>.json.

    .venv/bin/python bench/scale.py [--quick] [--runs 3] [--duration 8] [--large 1000000]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

import tools
import workloads as w
from common import (
    MIB,
    START_TIMEOUT,
    Server,
    chatmedia_executable,
    console,
    create_random_file,
    exit_on_sigterm,
    export_source,
    filesystem_of,
    free_port,
    machine,
    save_json,
    source_state,
    start_process,
    stop,
    suspicious_lines,
    wait_for_key,
    wait_http,
)
from peers import Chatmedia
from run import LIMITS_NEVER_REACHED

PATHS_SCRIPT = Path(__file__).resolve().parent / "wrk_paths.lua"
LISTED = "conv-00000"  # the conversation listed page by page
TEMPLATE_NAME = "scale-template.bin"
PAGE_LIMIT = 100
TARGET = 0.10  # the large figures within 10 % of the small ones
SEED_BATCH = 50_000
FOREIGN_LIMIT = 0.1  # cores others may use during a sample before it is flagged
# metric, better when higher?
COMPARED = {
    "W2": (("requests_per_s", True), ("p50_ms", False), ("p99_ms", False)),
    "W3": (("uploads_per_s", True), ("p50_ms", False), ("p99_ms", False)),
    "list": (("page_p50_ms", False), ("page_p99_ms", False), ("page_mean_ms", False)),
}


@dataclass(frozen=True, slots=True)
class Instance:
    """Where the server's data is and how it is started (again and again, same folder)."""

    workdir: Path
    data_dir: Path
    port: int
    env: Mapping[str, str]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "chatmedia.db"


def make_instance(workdir: Path, settings: Mapping[str, str], source: Path | None) -> Instance:
    """The environment `common.running_server` gives a server, on a port kept for all its
    starts (its data folder outlives each of them)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHATMEDIA_")}
    data_dir = workdir / "data"
    port = free_port()
    env = inherited | {
        "CHATMEDIA_DATA_DIR": str(data_dir),
        "CHATMEDIA_HOST": "127.0.0.1",
        "CHATMEDIA_PORT": str(port),
        "CHATMEDIA_MAX_UPLOAD_SIZE": "1MiB",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    return Instance(workdir, data_dir, port, env)


@contextmanager
def serve(instance: Instance, log_name: str, key: str | None) -> Iterator[Server]:
    """`chatmedia serve` on the instance's data; the first start (`key` None) reads the key
    it prints. Stopped (its process group) on the way out."""
    log_path = instance.workdir / log_name
    command = [str(chatmedia_executable()), "serve"]
    process = start_process(command, instance.workdir, instance.env, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        if key is None:
            key = wait_for_key(process, log_path, deadline)
        base_url = f"http://127.0.0.1:{instance.port}"
        wait_http(process, f"{base_url}/healthz", log_path, deadline)
        yield Server(process, base_url, key, log_path, instance.data_dir)
    finally:
        stop(process)


def peer_of(server: Server) -> Chatmedia:
    """The server as bench/workloads.py measures it."""
    return Chatmedia(server.process.pid, server.data_dir, ("127.0.0.1", _port(server)), server.key)


def _port(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


# --- seeding --------------------------------------------------------------------------------


def upload_template(server: Server, path: Path) -> dict[str, Any]:
    """The one file uploaded through the API; every seeded row is a copy of its row."""
    auth = {"Authorization": f"Bearer {server.key}"}
    with path.open("rb") as f:
        response = httpx.post(
            f"{server.base_url}/v1/files",
            headers=auth,
            files={"file": (TEMPLATE_NAME, f, "application/octet-stream")},
            data={"conversationId": LISTED},
            timeout=30,
        )
    if response.status_code != 201:
        raise RuntimeError(f"template upload answered {response.status_code}: {response.text}")
    record: dict[str, Any] = response.json()
    return record


def conversation(n: int) -> str:
    return f"conv-{n:05d}"


def new_id() -> str:
    """An id shaped like the server's (secrets.token_urlsafe(16): 22 characters)."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def seed(
    db_path: Path, template_id: str, total: int, listed: int, conversations: int, tag: str
) -> dict[str, Any]:
    """Add rows until the database holds `total` files and conversation LISTED `listed` of
    them; the others go round-robin to the other `conversations - 1` conversations, the
    listed one's rows spread evenly among them (in insertion order, as they would arrive).
    Each row copies the template's (same blob, type, tenant), with an id, a stored name, a
    conversation and a creation time of its own. The server must be stopped."""
    started = time.perf_counter()
    with closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB: index pages stay in memory
        row = db.execute("SELECT * FROM files WHERE id = ?", (template_id,)).fetchone()
        template = dict(row)
        have = db.execute("SELECT count(*) FROM files").fetchone()[0]
        have_listed = db.execute(
            "SELECT count(*) FROM files WHERE conversation_id = ?", (LISTED,)
        ).fetchone()[0]
        add = total - have
        add_listed = max(0, min(add, listed - have_listed))
        if add <= 0:
            return {"added": 0, "files": have, "seconds": 0.0}
        if add_listed < add and conversations < 2:
            raise SystemExit("--conversations must be at least 2 for files outside the listed one")
        columns = [c for c in template if c != "seq"]
        base = datetime.now(UTC).replace(tzinfo=None) - timedelta(milliseconds=add)
        order = ["id", "stored_name", "name", "conversation_id", "created_at"]
        fixed = [template[c] for c in columns if c not in order]
        columns_in_order = order + [c for c in columns if c not in order]
        # The table's own column names, read from it: nothing from outside.
        names, marks = ", ".join(columns_in_order), ", ".join("?" for _ in columns_in_order)
        insert = f"INSERT INTO files ({names}) VALUES ({marks})"  # noqa: S608

        def rows() -> Iterator[tuple[Any, ...]]:
            other = 0
            for i in range(add):
                if (i + 1) * add_listed // add > i * add_listed // add:
                    conv = LISTED
                else:
                    conv = conversation(1 + other % (conversations - 1))
                    other += 1
                name = f"{tag}-{i}.bin"
                created = (base + timedelta(milliseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
                yield (new_id(), f"{conv}_{name}", name, conv, created, *fixed)

        db.execute("BEGIN")
        generator = rows()
        while batch := [r for _, r in zip(range(SEED_BATCH), generator, strict=False)]:
            db.executemany(insert, batch)
        # What the tenant holds, as the server keeps it with each file it adds.
        db.execute(
            "UPDATE tenant_usage SET files = files + ?, bytes = bytes + ? WHERE tenant = ?",
            (add, add * template["size"], template["tenant"]),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = db.execute("SELECT count(*) FROM files").fetchone()[0]
    seconds = time.perf_counter() - started
    console.print(f"seeded {add:,} files in {seconds:.1f} s: {files:,} in the database")
    return {"added": add, "added_listed": add_listed, "files": files, "seconds": round(seconds, 1)}


def database_facts(db_path: Path, template_sha: str) -> dict[str, Any]:
    """Counts, sizes and the query plans of the statements measured (SQLite's choice of
    index is what makes a listing cost the same at any size, or not)."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        count = db.execute("SELECT count(*) FROM files").fetchone()[0]
        listed = db.execute(
            "SELECT count(*) FROM files WHERE conversation_id = ?", (LISTED,)
        ).fetchone()[0]
        conversations = db.execute("SELECT count(DISTINCT conversation_id) FROM files").fetchone()[
            0
        ]
        plans = {
            "list_first_page": "SELECT * FROM files WHERE tenant = ? AND conversation_id = ? "
            "ORDER BY seq DESC LIMIT ?",
            "list_next_page": "SELECT * FROM files WHERE tenant = ? AND conversation_id = ? "
            "AND seq < ? ORDER BY seq DESC LIMIT ?",
            "file_by_id": "SELECT * FROM files WHERE id = ?",
            "blob_in_use": "SELECT seq FROM files WHERE sha256 = ? LIMIT 1",
        }
        arguments = {
            "list_first_page": ("default", LISTED, PAGE_LIMIT + 1),
            "list_next_page": ("default", LISTED, 10**12, PAGE_LIMIT + 1),
            "file_by_id": ("x",),
            "blob_in_use": (template_sha,),
        }
        shown = {
            name: [
                r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", arguments[name]).fetchall()
            ]
            for name, sql in plans.items()
        }
        has_stats = bool(
            db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
        )
    size = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*") if p.is_file())
    return {
        "files": count,
        "listed_files": listed,
        "conversations": conversations,
        "database_mib": round(size / MIB, 1),
        "sqlite_stat1": has_stats,
        "query_plans": shown,
    }


def file_count(db_path: Path) -> int:
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        count: int = db.execute("SELECT count(*) FROM files").fetchone()[0]
        return count


def write_paths(db_path: Path, sha256: str, sample: int, out: Path) -> int:
    """A random sample of the seeded files' content paths (all 64 KiB: one blob), one a
    line, for bench/wrk_paths.lua; how many."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM files WHERE sha256 = ? ORDER BY random() LIMIT ?",
                (sha256, sample),
            )
        ]
    out.write_text("".join(f"/v1/files/{i}/content\n" for i in ids))
    return len(ids)


# --- the workloads --------------------------------------------------------------------------


def run_wrk_paths(
    address: tuple[str, int], paths: Path, duration: float, headers: Mapping[str, str]
) -> dict[str, Any]:
    """wrk with bench/wrk_paths.lua (W2's connections and threads); its BENCH_JSON figures."""
    threads = min(w.WRK_THREADS, w.W2_CONNECTIONS)
    command = ["wrk", f"-t{threads}", f"-c{w.W2_CONNECTIONS}", f"-d{max(1, round(duration))}s"]
    command += ["--timeout", w.WRK_TIMEOUT, "-s", str(PATHS_SCRIPT)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    host, port = address
    command += [f"http://{host}:{port}/v1/files", "--", str(paths)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    match = w.BENCH_JSON.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    figures: dict[str, Any] = json.loads(match.group(1))
    return figures


def downloads(peer: Chatmedia, paths: Path, duration: float) -> w.Outcome:
    """W2 over many files: every answer must be a whole 64 KiB file."""
    figures = run_wrk_paths(peer.address, paths, duration, peer.auth)
    outcome = w._wrk_outcome(figures, "requests_per_s")
    per_answer = figures["bytes"] / max(1, figures["requests"])
    if not w.SMALL_FILE < per_answer < w.SMALL_FILE + 2048:  # body plus headers
        notes = (*outcome.notes, f"{per_answer:.0f} bytes per answer: not the 64 KiB files")
        return w.Outcome(outcome.metrics, ok=False, notes=notes, raw=outcome.raw)
    return outcome


def uploads(peer: Chatmedia, db_path: Path, duration: float) -> w.Outcome:
    """W3 as bench/workloads.py runs it, the files stored counted in the database (listing
    a million files through the API would take longer than the measurement)."""
    before = file_count(db_path)
    spec = peer.upload_spec
    args = ["upload", spec.method, spec.path, "1", str(w.UPLOAD_FILE), secrets.token_hex(6)]
    figures = w.run_wrk(
        peer.address, spec.path, w.W3_CONNECTIONS, duration, args, dict(peer.upload_auth)
    )
    outcome = w._wrk_outcome(figures, "uploads_per_s")
    stored = file_count(db_path) - before
    notes, ok = list(outcome.notes), outcome.ok
    if stored < figures["requests"]:
        ok = False
        notes.append(f"{figures['requests']} uploads answered but {stored} files stored")
    raw = outcome.raw | {"files_before": before, "files_stored": stored}
    return w.Outcome(outcome.metrics, ok=ok, notes=tuple(notes), raw=raw)


def list_once(client: httpx.Client, expected: int) -> list[float]:
    """Every page of the listed conversation; the seconds each took. Raises unless the
    pages hold each of its files once."""
    seconds: list[float] = []
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        params = {"conversationId": LISTED, "limit": str(PAGE_LIMIT)}
        if cursor:
            params["cursor"] = cursor
        started = time.perf_counter()
        response = client.get("/v1/files", params=params)
        page = response.json()
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"listing answered {response.status_code}: {response.text}")
        seen.update(item["id"] for item in page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            break
    if len(seen) != expected:
        raise RuntimeError(f"the listing held {len(seen)} distinct files, expected {expected}")
    return seconds


def listing(server: Server, expected: int, pages_wanted: int) -> w.Outcome:
    """Whole listings, one after another, until at least `pages_wanted` pages were timed
    (and at least 2 listings); one unrecorded listing first."""
    auth = {"Authorization": f"Bearer {server.key}"}
    passes = max(2, math.ceil(pages_wanted / math.ceil(expected / PAGE_LIMIT)))
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=60) as client:
        list_once(client, expected)
        timed = [list_once(client, expected) for _ in range(passes)]
    pages = sorted(s for one in timed for s in one)
    totals = [sum(one) for one in timed]
    metrics = {
        "page_p50_ms": round(percentile(pages, 50) * 1000, 2),
        "page_p99_ms": round(percentile(pages, 99) * 1000, 2),
        "page_mean_ms": round(statistics.fmean(pages) * 1000, 2),
        "listing_ms": round(statistics.median(totals) * 1000, 1),
        "pages": len(timed[0]),
    }
    return w.Outcome(
        metrics, raw={"passes": passes, "page_ms": [round(s * 1000, 3) for s in pages]}
    )


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# --- one database size ----------------------------------------------------------------------


def measure_size(
    label: str,
    server: Server,
    instance: Instance,
    template: dict[str, Any],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """The three workloads against the running server, the database at one size."""
    peer = peer_of(server)
    facts = database_facts(instance.db_path, template["sha256"])
    console.print(
        f"[bold]{label}[/bold]: {facts['files']:,} files, {facts['listed_files']:,} in "
        f"{LISTED}, {facts['database_mib']} MiB; plans {facts['query_plans']}",
        highlight=False,
    )
    paths = workdir / f"paths-{label}.txt"
    sampled = write_paths(instance.db_path, template["sha256"], args.sample_ids, paths)
    # Warm-up, unrecorded: connections, the worker's caches, the page cache.
    downloads(peer, paths, 1.0)
    samples: list[w.Sample] = []

    def record(sample: w.Sample) -> None:
        sample.peer = label
        foreign = sample.foreign_cpu_s / max(sample.wall_s, 0.001)
        if foreign > FOREIGN_LIMIT:
            sample.notes.append(f"others used {foreign:.2f} cores meanwhile")
        samples.append(sample)
        show(sample)

    expected = facts["listed_files"]
    for run in range(1, args.runs + 1):
        record(w.measure("list", peer, run, lambda: listing(server, expected, args.list_pages)))
    for run in range(1, args.runs + 1):
        record(w.measure("W2", peer, run, lambda: downloads(peer, paths, args.duration)))
    for run in range(1, args.runs + 1):
        record(w.measure("W3", peer, run, lambda: uploads(peer, instance.db_path, args.duration)))
    return {
        "label": label,
        "database": facts,
        "download_ids_sampled": sampled,
        "files_at_end": file_count(instance.db_path),
        "samples": [asdict(s) for s in samples],
    }


def show(sample: w.Sample) -> None:
    figures = ", ".join(f"{k} {v:g}" for k, v in sample.metrics.items())
    flag = "" if sample.ok else " [red]FAILED[/red]"
    notes = f" ({'; '.join(sample.notes)})" if sample.notes else ""
    console.print(
        f"{sample.peer:<4} run {sample.run} {sample.workload:<4} {figures}; "
        f"server CPU {sample.server_user_s + sample.server_system_s:.1f} s "
        f"in {sample.wall_s:.1f} s{flag}{notes}",
        highlight=False,
    )


def summarize(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload and metric: the median at each size, and large/small."""
    small, large = sizes
    rows = []
    for workload, metrics in COMPARED.items():
        for metric, higher_better in metrics:
            values = []
            for size in (small, large):
                found = [
                    s["metrics"][metric]
                    for s in size["samples"]
                    if s["workload"] == workload and s["ok"]
                ]
                values.append(statistics.median(found) if found else math.nan)
            ratio = values[1] / values[0] if values[0] else math.nan
            passed = ratio >= 1 - TARGET if higher_better else ratio <= 1 + TARGET
            rows.append(
                {
                    "workload": workload,
                    "metric": metric,
                    "small": values[0],
                    "large": values[1],
                    "ratio": round(ratio, 3),
                    "target": f"≥ {1 - TARGET:g}" if higher_better else f"≤ {1 + TARGET:g}",
                    "verdict": "PASS" if passed else "MISS",
                }
            )
    return rows


def print_summary(rows: list[dict[str, Any]], sizes: list[dict[str, Any]]) -> None:
    small, large = (s["database"]["files"] for s in sizes)
    table = Table(title=f"W7: {small:,} files against {large:,} (medians; ratio large/small)")
    for column in (
        "workload",
        "metric",
        f"{small:,} files",
        f"{large:,} files",
        "ratio",
        "target",
        "",
    ):
        table.add_column(column, justify="left" if column in ("workload", "metric") else "right")
    for row in rows:
        colour = "green" if row["verdict"] == "PASS" else "red"
        table.add_row(
            row["workload"],
            row["metric"],
            f"{row['small']:g}",
            f"{row['large']:g}",
            f"{row['ratio']:.3f}",
            row["target"],
            f"[{colour}]{row['verdict']}[/{colour}]",
        )
    console.print(table)


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (under a minute)")
    parser.add_argument("--runs", type=int, default=3, help="samples of each workload (3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (8)")
    parser.add_argument("--small", type=int, default=1000, help="files at first (1000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="files then (1000000)")
    parser.add_argument(
        "--conversations", type=int, default=10_000, help="conversations of the large size"
    )
    parser.add_argument(
        "--listed", type=int, default=10_000, help="files of the listed conversation (large)"
    )
    parser.add_argument(
        "--sample-ids", type=int, default=1000, help="files downloads pick from (1000)"
    )
    parser.add_argument(
        "--list-pages", type=int, default=300, help="pages timed per listing sample (300)"
    )
    parser.add_argument("--chatmedia-workers", type=int, default=None, help="CHATMEDIA_WORKERS")
    parser.add_argument(
        "--chatmedia-setting", metavar="NAME=VALUE", action="append", default=[],
        help="a CHATMEDIA_* setting for the server, e.g. RATE_LIMIT=off (repeat it)",
    )  # fmt: skip
    parser.add_argument(
        "--at-commit", metavar="REV", default=None,
        help="measure src/ of this commit (exported to bench/work/), not the checkout's",
    )  # fmt: skip
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 2.0
        args.large, args.conversations, args.listed = 50_000, 500, 2_000
        args.list_pages = 40
    if args.runs < 1 or not 1 <= args.duration <= 600:
        parser.error("--runs must be at least 1 and --duration within 1..600 s")
    if not 1 <= args.small < args.large or not args.small <= args.listed <= args.large:
        parser.error("need 1 <= --small < --large and --small <= --listed <= --large")
    return args


def main() -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    source = None
    if args.at_commit:
        source, commit = export_source(args.at_commit, tools.WORK_DIR)
        code = source_state(source, commit)
    else:
        code = source_state()
    settings = {"CHATMEDIA_" + k.upper(): v for k, v in LIMITS_NEVER_REACHED.items()}
    settings |= {
        "CHATMEDIA_" + s.split("=", 1)[0].upper(): s.split("=", 1)[1]
        for s in args.chatmedia_setting
    }
    if args.chatmedia_workers:
        settings["CHATMEDIA_WORKERS"] = str(args.chatmedia_workers)
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="chatmedia-scale-", dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        instance = make_instance(workdir, settings, source)
        template_file = workdir / TEMPLATE_NAME
        create_random_file(template_file, w.SMALL_FILE)
        seeding = []
        sizes = []
        warnings: list[str] = []
        # 1. First start: the schema, the key, the template file; then the small database.
        with serve(instance, "server-1.log", None) as server:
            key = server.key
            template = upload_template(server, template_file)
        warnings += suspicious_lines(workdir / "server-1.log")
        seeding.append(seed(instance.db_path, template["id"], args.small, args.small, 1, "small"))
        with serve(instance, "server-2.log", key) as server:
            sizes.append(
                measure_size(
                    "1k" if args.small == 1000 else "small",
                    server,
                    instance,
                    template,
                    args,
                    workdir,
                )
            )
        warnings += suspicious_lines(workdir / "server-2.log")
        # 2. The large database, seeded while the server is stopped.
        seeding.append(
            seed(
                instance.db_path,
                template["id"],
                args.large,
                args.listed,
                args.conversations,
                "large",
            )
        )
        with serve(instance, "server-3.log", key) as server:
            sizes.append(
                measure_size(
                    "1M" if args.large == 1_000_000 else "large",
                    server,
                    instance,
                    template,
                    args,
                    workdir,
                )
            )
        warnings += suspicious_lines(workdir / "server-3.log")
        data_filesystem = filesystem_of(workdir)
    rows = summarize(sizes)
    document = {
        "benchmark": "scale",
        "date": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine(),
        "source": code,
        "data_filesystem": data_filesystem,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"chatmedia_settings": settings, "page_limit": PAGE_LIMIT, "listed": LISTED},
        "units": {"throughput": "requests/s", "latency": "ms", "memory": "MiB"},
        "seeding": seeding,
        "sizes": sizes,
        "summary": rows,
        "chatmedia_log_warnings": warnings,
    }
    saved = save_json("scale", document)
    print_summary(rows, sizes)
    if warnings:
        console.print(
            f"[yellow]{len(warnings)} warning lines in the server's log (see the JSON)[/yellow]"
        )
    console.print(f"raw results: {saved}")


if __name__ == "__main__":
    main()
