"""What the request limits cost: keyed 64 KiB downloads (W2) from a server with the limits
on but never reached, and from one with them off, each a fresh `chatmedia serve`, in
turns, several rounds. Reports requests per second and the worker's CPU per request.

Between sessions of bench/run.py this machine varies by more than the few percent to be
told apart (a peer whose path never touches the limits varied as much), so the two are
measured here one right after the other, many times, on one workload.

    .venv/bin/python bench/limits_ab.py [--rounds 3] [--runs 3] [--duration 4]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from common import console, cpu_seconds, machine, running_server, save_json

ON = {"CHATMEDIA_RATE_LIMIT": "1000000/s", "CHATMEDIA_ANON_RATE_LIMIT": "1000000/s"}
OFF = {
    "CHATMEDIA_RATE_LIMIT": "off",
    "CHATMEDIA_ANON_RATE_LIMIT": "off",
    "CHATMEDIA_AUTH_FAILURE_LIMIT": "off",
}


def measure(settings: dict[str, str], runs: int, duration: int) -> list[dict[str, float]]:
    """`runs` wrk runs of keyed downloads against a fresh server with `settings`."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp), "1MiB", settings=settings) as server,
    ):
        auth = {"Authorization": f"Bearer {server.key}"}
        uploaded = httpx.post(
            server.base_url + "/v1/files", headers=auth, files={"file": ("a", b"\1" * 65536)}
        ).json()
        url = f"{server.base_url}/v1/files/{uploaded['id']}/content"
        pid = server.process.pid
        worker = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        wrk = ["wrk", "-t1", "-c16", "-H", f"Authorization: Bearer {server.key}", url]
        subprocess.run([*wrk, "-d2s"], capture_output=True, check=True)  # warm up
        samples = []
        for _ in range(runs):
            before = cpu_seconds(worker)
            out = subprocess.run(
                [*wrk, f"-d{duration}s"], capture_output=True, text=True, check=True
            ).stdout
            used = cpu_seconds(worker) - before
            requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
            per_request = used / requests * 1e6
            samples.append(
                {"requests_per_s": requests / duration, "cpu_us_per_request": per_request}
            )
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for round_ in range(args.rounds):
        for name, settings in (("on", ON), ("off", OFF)):
            samples = measure(settings, args.runs, args.duration)
            results[name] += samples
            console.print(f"round {round_ + 1} limits {name}: {samples}")
    summary = {
        name: {
            metric: statistics.median(s[metric] for s in samples)
            for metric in ("requests_per_s", "cpu_us_per_request")
        }
        for name, samples in results.items()
    }
    ratio = summary["on"]["requests_per_s"] / summary["off"]["requests_per_s"]
    console.print(f"medians: {summary}; on/off {ratio:.3f}")
    document = {"machine": machine(), "settings": vars(args), "samples": results}
    path = save_json("limits-ab", document | {"medians": summary, "ratio": ratio})
    console.print(f"raw results: {path}")


if __name__ == "__main__":
    main()
