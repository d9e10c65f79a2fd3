"""Summaries of a comparison run: medians and ranges per workload and peer, the ratios
chatmedia/peer taken within each run, and the issue's targets with PASS or MISS.

Used by bench/run.py, and on its own to print the Markdown tables of a saved run:

    .venv/bin/python bench/report.py bench/results/compare-YYYYMMDD-HHMMSS.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CHATMEDIA = "chatmedia"
DASH = "\u2013"  # between min and max
TIMES = "\u00d7"  # after a ratio


@dataclass(frozen=True, slots=True)
class RatioTarget:
    """chatmedia's `metric` on `workload` must be at least `minimum` times `peer`'s."""

    workload: str
    metric: str
    peer: str
    minimum: float
    ours: str = CHATMEDIA  # which of chatmedia's ways is judged


@dataclass(frozen=True, slots=True)
class MemoryTarget:
    """chatmedia's worker RSS (`what`) must stay at or under `limit_mib`."""

    label: str
    what: str  # a key of the run's memory figures, or a workload whose highest peak counts
    limit_mib: float


# The performance issue's required targets (its goals are in docs/benchmarks.md).
ACCEL = "chatmedia-accel"  # behind nginx, whole files sent by nginx (X-Accel-Redirect)
SCAN = "chatmedia-scan"  # every upload scanned by a clamd on the same machine
RATIO_TARGETS = (
    RatioTarget("W1x1", "mb_per_s", "synapse", 3.0),
    RatioTarget("W1x8", "mb_per_s", "synapse", 3.0),
    RatioTarget("W1x1", "mb_per_s", "nginx", 0.8, ACCEL),
    RatioTarget("W1x8", "mb_per_s", "nginx", 0.8, ACCEL),
    RatioTarget("W2", "requests_per_s", "nginx", 0.25),
    RatioTarget("W2", "requests_per_s", "nginx", 0.25, "chatmedia-signed"),
    RatioTarget("W2", "requests_per_s", "synapse", 10.0),
    RatioTarget("W2", "requests_per_s", "synapse", 10.0, "chatmedia-signed"),
    RatioTarget("W3", "uploads_per_s", "synapse", 1.5),
    RatioTarget("W3", "uploads_per_s", "synapse", 1.0, SCAN),  # the scanning issue's
    RatioTarget("W4", "mb_per_s", "synapse", 2.0),
    RatioTarget("W5", "requests_per_s", "nginx", 0.3),
)
W3_P99_MS = 100.0
MEMORY_TARGETS = (
    MemoryTarget("idle RSS after start", "idle_start", 80),
    MemoryTarget("idle RSS after the workloads", "idle_end", 100),
    MemoryTarget("peak RSS during W4, fresh process", "first_W4_peak", 100),
    MemoryTarget("peak RSS during W4, highest over the runs", "W4", 100),
    MemoryTarget("peak RSS during W1 with 8 clients, fresh process", "first_W1x8_peak", 120),
    MemoryTarget("peak RSS during W1 with 8 clients, highest over the runs", "W1x8", 120),
)
# The figures each workload is judged by, and how they are shown.
MAIN_METRIC = {
    "W1x1": "mb_per_s",
    "W1x8": "mb_per_s",
    "W2": "requests_per_s",
    "W3": "uploads_per_s",
    "W4": "mb_per_s",
    "W5": "requests_per_s",
}
TITLES = {
    "W1x1": "W1 large download, 1 client (MB/s)",
    "W1x8": "W1 large download, 8 clients (MB/s)",
    "W2": "W2 small downloads, 64 connections (requests/s)",
    "W3": "W3 small uploads, 32 connections (uploads/s)",
    "W4": "W4 large upload (MB/s)",
    "W5": "W5 64 KiB range reads, 64 connections (requests/s)",
}


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, minimum and maximum of some figures."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of `values` (at least one)."""
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show_ratio(self) -> str:
        """A ratio, `median x (min-max)`: three decimals below 0.1, two otherwise."""
        digits = 3 if self.median < 0.1 else 2
        if self.n == 1:
            return f"{self.median:.{digits}f}{TIMES}"
        span = f"{self.low:.{digits}f}{DASH}{self.high:.{digits}f}"
        return f"{self.median:.{digits}f}{TIMES} ({span})"

    def show(self, digits: int = 0) -> str:
        """`median (min-max)`, with an en dash."""
        if self.n == 1:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}{DASH}{self.high:,.{digits}f})"


def _good(samples: Iterable[Mapping[str, Any]], workload: str, peer: str) -> list[Any]:
    return [s for s in samples if s["workload"] == workload and s["peer"] == peer and s["ok"]]


def spread(
    samples: Sequence[Mapping[str, Any]], workload: str, peer: str, metric: str
) -> Spread | None:
    """The spread of `metric` over the good samples of one workload and peer."""
    values = [s["metrics"][metric] for s in _good(samples, workload, peer)]
    return Spread.of(values) if values else None


def ratios(
    samples: Sequence[Mapping[str, Any]],
    workload: str,
    metric: str,
    peer: str,
    ours: str = CHATMEDIA,
) -> Spread | None:
    """chatmedia/peer for `metric`, taken within each run, over the runs that have both."""
    mine = {s["run"]: s["metrics"][metric] for s in _good(samples, workload, ours)}
    theirs = {s["run"]: s["metrics"][metric] for s in _good(samples, workload, peer)}
    values = [mine[r] / theirs[r] for r in sorted(mine.keys() & theirs.keys()) if theirs[r]]
    return Spread.of(values) if values else None


def peak_rss(samples: Sequence[Mapping[str, Any]], workload: str, peer: str) -> float | None:
    """The highest sampled RSS of `peer` during any run of `workload`."""
    values = [s["peak_rss_mib"] for s in samples if s["workload"] == workload and s["peer"] == peer]
    return max(values) if values else None


def verdicts(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/MISS (or n/a when not measured)."""
    samples = document["samples"]
    rows: list[dict[str, Any]] = []
    for t in RATIO_TARGETS:
        r = ratios(samples, t.workload, t.metric, t.peer, t.ours)
        who = "" if t.ours == CHATMEDIA else f" ({t.ours})"
        rows.append(
            {
                "target": f"{t.workload}{who} ≥ {t.minimum:g}{TIMES} {t.peer}",
                "measured": r.show_ratio() if r else "not measured",
                "verdict": ("PASS" if r.median >= t.minimum else "MISS") if r else "n/a",
            }
        )
    # W3's latency: each upload hashed and fsynced, 32 at once.
    p99 = [x["metrics"]["p99_ms"] for x in _good(samples, "W3", CHATMEDIA)]
    rows.append(
        {
            "target": f"W3 p99 ≤ {W3_P99_MS:g} ms",
            "measured": Spread.of(p99).show(1) + " ms" if p99 else "not measured",
            "verdict": ("PASS" if statistics.median(p99) <= W3_P99_MS else "MISS")
            if p99
            else "n/a",
        }
    )
    memory = document.get("memory", {}).get(CHATMEDIA, {})
    for m in MEMORY_TARGETS:
        value = memory[m.what] if m.what in memory else peak_rss(samples, m.what, CHATMEDIA)
        rows.append(
            {
                "target": f"{m.label} ≤ {m.limit_mib:g} MiB",
                "measured": f"{value:.1f} MiB" if value is not None else "not measured",
                "verdict": ("PASS" if value <= m.limit_mib else "MISS")
                if value is not None
                else "n/a",
            }
        )
    return rows


# --- rendering ------------------------------------------------------------------------------


def _peers(samples: Sequence[Mapping[str, Any]], workload: str) -> list[str]:
    names = dict.fromkeys(s["peer"] for s in samples if s["workload"] == workload)
    return sorted(names, key=lambda n: (not n.startswith(CHATMEDIA), n))


def workload_rows(document: Mapping[str, Any], workload: str) -> list[list[str]]:
    """Rows of one workload's table: peer, main figure, p99 or peak RSS, server CPU, ratio."""
    samples = document["samples"]
    metric = MAIN_METRIC[workload]
    rows = []
    for peer in _peers(samples, workload):
        s = spread(samples, workload, peer, metric)
        good = _good(samples, workload, peer)
        failed = sum(1 for x in samples if x["workload"] == workload and x["peer"] == peer) - len(
            good
        )
        if peer.startswith(CHATMEDIA):
            ratio = "—"
        else:
            r = ratios(samples, workload, metric, peer)
            ratio = r.show_ratio() if r else "—"
        if "p99_ms" in (good[0]["metrics"] if good else {}):
            second = Spread.of([x["metrics"]["p99_ms"] for x in good]).show(1)
        else:
            peak = peak_rss(samples, workload, peer)
            second = f"{peak:.1f}" if peak is not None else "—"
        cpu = [
            (x["server_user_s"] + x["server_system_s"]) / x["wall_s"] for x in good if x["wall_s"]
        ]
        rows.append(
            [
                peer,
                s.show() if s else "failed",
                second,
                f"{statistics.median(cpu):.2f}" if cpu else "—",
                ratio,
                str(failed) if failed else "",
            ]
        )
    return rows


def headers(workload: str) -> list[str]:
    """Column names of a workload table."""
    second = "p99 ms" if workload in ("W2", "W3", "W5") else "peak RSS MiB"
    unit = MAIN_METRIC[workload].replace("_per_s", "/s").replace("mb", "MB")
    return [
        "peer",
        f"{unit}, median (min{DASH}max)",
        second,
        "server CPU (cores)",
        "chatmedia/peer",
        "failed",
    ]


def markdown(document: Mapping[str, Any]) -> str:
    """The Markdown tables of a run: one per workload, the targets, the memory."""
    out: list[str] = []
    for workload in document["workloads"]:
        out += [f"**{TITLES[workload]}**", ""]
        cols = headers(workload)
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(row) + " |" for row in workload_rows(document, workload)]
        out.append("")
    out += ["**Targets**", "", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {v['target']} | {v['measured']} | {v['verdict']} |" for v in verdicts(document)]
    out.append("")
    out += ["**Memory (RSS, MiB)**", "", "| peer | idle after start | idle after the workloads |"]
    out.append("|---|---|---|")
    for peer, figures in document.get("memory", {}).items():
        out.append(
            f"| {peer} | {figures.get('idle_start', '—')} | {figures.get('idle_end', '—')} |"
        )
    out += ["", "**Peak RSS during each workload (MiB)**", ""]
    out.append(
        "| workload | peer | highest peak | peak in run 1 | RSS before, median"
        " | peak over before, median |"
    )
    out.append("|---|---|---|---|---|---|")
    out += ["| " + " | ".join(row) + " |" for row in memory_rows(document)]
    return "\n".join(out) + "\n"


def memory_rows(document: Mapping[str, Any]) -> list[list[str]]:
    """Per workload and peer: the highest sampled RSS, that of the first run (before later
    workloads have grown the process), and how far above its RSS before each run it went."""
    samples = document["samples"]
    rows = []
    for workload in document["workloads"]:
        for peer in _peers(samples, workload):
            mine = [s for s in samples if s["workload"] == workload and s["peer"] == peer]
            if not mine or peer in ("chatmedia-fe", "chatmedia-signed"):
                continue
            first = min(mine, key=lambda s: s["run"])
            before = statistics.median(s["rss_before_mib"] for s in mine)
            rise = statistics.median(s["peak_rss_mib"] - s["rss_before_mib"] for s in mine)
            highest = max(s["peak_rss_mib"] for s in mine)
            rows.append(
                [
                    workload,
                    peer,
                    f"{highest:.1f}",
                    f"{first['peak_rss_mib']:.1f}",
                    f"{before:.1f}",
                    f"{rise:+.1f}",
                ]
            )
    return rows


def print_report(document: Mapping[str, Any], console: Console) -> None:
    """The same tables, for the terminal."""
    for workload in document["workloads"]:
        table = Table(title=TITLES[workload])
        for column in headers(workload):
            table.add_column(column, justify="left" if column == "peer" else "right")
        for row in workload_rows(document, workload):
            table.add_row(*row)
        console.print(table)
    table = Table(title="Targets (chatmedia)")
    for column in ("target", "measured", "verdict"):
        table.add_column(column)
    for v in verdicts(document):
        colour = {"PASS": "green", "MISS": "red"}.get(v["verdict"], "yellow")
        table.add_row(v["target"], v["measured"], f"[{colour}]{v['verdict']}[/{colour}]")
    console.print(table)


def main() -> None:
    """Print the Markdown tables of a saved run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a bench/results/compare-*.json file")
    args = parser.parse_args()
    print(markdown(json.loads(args.results.read_text())), end="")


if __name__ == "__main__":
    main()
