"""W10's floors: what the store underneath allows a 256 MiB upload in 8 MiB requests, with no
HTTP, no database and no server, so that W10's ratios can be read against them.

- SeaweedFS (`weed mini`, as bench/tus.py starts it), through obstore from memory: 32
  PutObjects of 8 MiB one after another (what a server that stores each PATCH before it
  answers must at least wait for), one 256 MiB multipart put, the CopyObject of those 256
  MiB (what moving a finished upload to its content-addressed key costs) and reading them
  back;
- the local disk: 32 times an 8 MiB write and its fdatasync;
- SHA-256 of 8 MiB on one core.

    .venv/bin/python bench/tus_ceilings.py [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import obstore
from obstore.store import S3Store

import common
from backends import ROOT

MIB = 1024 * 1024
PIECE, PIECES = 8 * MIB, 32


def seaweedfs(workdir: Path, runs: int) -> list[dict[str, float]]:
    sys.path.insert(0, str(ROOT))  # the test launchers live in tests/
    from tests.s3server import start_s3_server, stop_s3_server

    process, server = start_s3_server(workdir / "s3")
    try:
        config = {"endpoint": server.endpoint, "region": "us-east-1",
                  "access_key_id": server.access_key_id,
                  "secret_access_key": server.secret_access_key,
                  "virtual_hosted_style_request": False}  # fmt: skip
        options = {"allow_http": True}
        store = S3Store(server.bucket, config=config, client_options=options)  # type: ignore[arg-type]
        data = os.urandom(PIECE)
        whole = data * PIECES
        results = []
        for run in range(runs):
            started = time.perf_counter()
            for i in range(PIECES):
                obstore.put(store, f"pieces/{run}/{i}", data, use_multipart=False)
            puts = time.perf_counter() - started
            started = time.perf_counter()
            obstore.put(store, f"whole/{run}", whole, chunk_size=PIECE, max_concurrency=2)
            multipart = time.perf_counter() - started
            started = time.perf_counter()
            obstore.copy(store, f"whole/{run}", f"copy/{run}")
            copy = time.perf_counter() - started
            started = time.perf_counter()
            for _ in obstore.get(store, f"whole/{run}").stream(MIB):
                pass
            read = time.perf_counter() - started
            results.append({"puts_32x8mib_s": puts, "multipart_256mib_s": multipart,
                            "copy_256mib_s": copy, "read_256mib_s": read})  # fmt: skip
        return results
    finally:
        stop_s3_server(process)


def disk(workdir: Path, runs: int) -> list[dict[str, float]]:
    data = os.urandom(PIECE)
    results = []
    for run in range(runs):
        path = workdir / f"disk-{run}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        started = time.perf_counter()
        for _ in range(PIECES):
            os.write(fd, data)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
        os.close(fd)
        path.unlink()
        started = time.perf_counter()
        for _ in range(10):
            hashlib.sha256(data).digest()
        results.append({"write_fdatasync_32x8mib_s": elapsed,
                        "sha256_8mib_ms": (time.perf_counter() - started) * 100})  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every case (3)")
    args = parser.parse_args()
    work = ROOT / "bench" / "work"
    work.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatmedia-tus-ceilings-", dir=work) as tmp:
        workdir = Path(tmp)
        cases: dict[str, Any] = {"seaweedfs": seaweedfs(workdir, args.runs),
                                 "disk": disk(workdir, args.runs)}  # fmt: skip
    for name, runs in cases.items():
        for field in runs[0]:
            values = [run[field] for run in runs]
            print(f"{name:10} {field:28} median {statistics.median(values):8.3f}  "
                  f"min {min(values):8.3f}  max {max(values):8.3f}")  # fmt: skip
    print("raw results:", common.save_json("tus-ceilings", {"machine": common.machine(),
                                                              "cases": cases}))  # fmt: skip


if __name__ == "__main__":
    main()
