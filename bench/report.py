"""Turns per-run records into the markdown report: figures, ratios and the issue's targets."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

PACKAGES = (
    "conveyor", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "python-multipart",
    "celery", "kombu", "redis", "pillow", "httpx", "psutil",
)  # fmt: skip


@dataclass
class Record:
    run: int
    target: str
    workload: str
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


# (workload, metric, label, decimals): the rows of the figures table.
ROWS: list[tuple[str, str, str, int]] = [
    ("W-img", "accept_p50_ms", "accept latency p50 (ms)", 1),
    ("W-img", "accept_p99_ms", "accept latency p99 (ms)", 1),
    ("W-img", "accept_max_ms", "accept latency max (ms)", 1),
    ("W-img", "peak_rss_mb", "peak RSS, all server processes (MB)", 0),
    ("W-img", "all_done_s", "all jobs done after (s)", 1),
    ("W-img", "errors", "errors + failed jobs", 0),
    ("W-img-batch", "all_done_s", "all jobs done after (s)", 2),
    ("W-img-batch", "errors", "errors + failed jobs", 0),
    ("W-big", "mb_per_s", "multipart upload (MB/s)", 0),
    ("W-big", "rss_growth_mb", "multipart: peak RSS growth (MB)", 1),
    ("W-big", "errors", "multipart: errors", 0),
    ("W-big-raw", "mb_per_s", "raw body upload (MB/s)", 0),
    ("W-big-raw", "rss_growth_mb", "raw body: peak RSS growth (MB)", 1),
    ("W-big-raw", "errors", "raw body: errors", 0),
    ("W-noop", "jobs_per_s", "jobs/s end to end", 0),
    ("W-noop", "errors", "errors + failed jobs", 0),
    ("W-noop", "client_cpu_share", "harness CPU / wall time (near 1: client-bound)", 2),
    ("W-burst", "p50_ms", "accept latency p50 (ms)", 0),
    ("W-burst", "p99_ms", "accept latency p99 (ms)", 0),
    ("W-burst", "max_ms", "accept latency max (ms)", 0),
    ("W-burst", "errors", "upload errors (must be 0)", 0),
    ("W-burst", "jobs_failed", "failed or unfinished jobs", 0),
    ("W-burst", "client_cpu_share", "harness CPU / wall time", 2),
]

# Headline metrics for the conveyor / baseline ratio table.
RATIO_ROWS = [
    ("W-img", "accept_p99_ms", "W-img accept p99"),
    ("W-img", "peak_rss_mb", "W-img peak RSS"),
    ("W-img-batch", "all_done_s", "W-img-batch time to all done"),
    ("W-big", "mb_per_s", "W-big multipart MB/s"),
    ("W-big", "rss_growth_mb", "W-big multipart RSS growth"),
    ("W-noop", "jobs_per_s", "W-noop jobs/s"),
    ("W-burst", "p99_ms", "W-burst p99"),
]


@dataclass(frozen=True, slots=True)
class Goal:
    label: str
    workload: str
    metric: str
    baseline: str | None  # None: an absolute bound on conveyor's own figure
    goal: str
    check: Callable[[float], bool]
    base_workload: str | None = None  # defaults to ``workload``
    speedup: bool = False  # ratio is baseline / conveyor ("x times sooner")
    every_run: bool = False  # must hold in every run, not just for the median
    issue: int = 4  # the issue that set the goal
    before: str = "—"  # the figure when the goal was set (the issue's "today")


GOALS = [
    Goal("W-img accept p99", "W-img", "accept_p99_ms", None, "<= 50 ms", lambda v: v <= 50),
    Goal("W-img accept p99 vs bgtasks", "W-img", "accept_p99_ms", "bgtasks",
         "conveyor/bgtasks < 1/20", lambda r: r < 1 / 20),
    Goal("W-img-batch time to all done vs Celery", "W-img-batch", "all_done_s", "celery",
         "celery/conveyor >= 3x", lambda r: r >= 3, speedup=True),
    Goal("W-big multipart MB/s vs bgtasks", "W-big", "mb_per_s", "bgtasks",
         "conveyor/bgtasks >= 1.3", lambda r: r >= 1.3),
    Goal("W-big multipart RSS growth vs bgtasks", "W-big", "rss_growth_mb", "bgtasks",
         "conveyor/bgtasks <= 1/20", lambda r: r <= 1 / 20),
    Goal("W-big raw body MB/s vs bgtasks multipart", "W-big-raw", "mb_per_s", "bgtasks",
         "conveyor/bgtasks >= 1.3", lambda r: r >= 1.3, base_workload="W-big"),
    Goal("W-big raw body RSS growth vs bgtasks multipart", "W-big-raw", "rss_growth_mb",
         "bgtasks", "conveyor/bgtasks <= 1/20", lambda r: r <= 1 / 20, base_workload="W-big"),
    Goal("W-noop jobs/s vs Celery", "W-noop", "jobs_per_s", "celery",
         "conveyor/celery >= 1", lambda r: r >= 1),
    Goal("W-burst errors", "W-burst", "errors", None, "0 in every run", lambda v: v == 0,
         every_run=True),
    # Issue 16 (the accept path at group-commit speed): "before" is the issue's "today".
    Goal("W-noop jobs/s vs Celery", "W-noop", "jobs_per_s", "celery",
         "conveyor/celery >= 2", lambda r: r >= 2, issue=16, before="0.57x"),
    Goal("W-burst accept p99 vs bgtasks", "W-burst", "p99_ms", "bgtasks",
         "conveyor/bgtasks <= 1 (no slower)", lambda r: r <= 1, issue=16,
         before="2.6 (2.6x slower)"),
    Goal("W-img accept p99", "W-img", "accept_p99_ms", None, "<= 50 ms", lambda v: v <= 50,
         issue=16, before="56 ms"),
    Goal("W-img accept p99 vs Celery", "W-img", "accept_p99_ms", "celery",
         "conveyor/celery <= 1", lambda r: r <= 1, issue=16, before="1.08 (56 vs 50.5 ms)"),
    Goal("W-img-batch time to all done vs Celery", "W-img-batch", "all_done_s", "celery",
         "celery/conveyor >= 3x", lambda r: r >= 3, speedup=True, issue=16, before="1.59x"),
]  # fmt: skip


def _value(records: list[Record], run: int, target: str, workload: str, metric: str) -> float:
    for rec in records:
        if (rec.run, rec.target, rec.workload) == (run, target, workload) and not rec.error:
            value = rec.metrics.get(metric, math.nan)
            return value if math.isfinite(value) else math.nan
    return math.nan


def values(records: list[Record], target: str, workload: str, metric: str) -> list[float]:
    runs = sorted({r.run for r in records})
    vals = [_value(records, run, target, workload, metric) for run in runs]
    return [v for v in vals if not math.isnan(v)]


def ratios(
    records: list[Record], workload: str, metric: str, baseline: str,
    base_workload: str | None = None, speedup: bool = False,
) -> list[float]:  # fmt: skip
    """conveyor / baseline (or baseline / conveyor), run by run: never across runs."""
    out = []
    for run in sorted({r.run for r in records}):
        mine = _value(records, run, "conveyor", workload, metric)
        base = _value(records, run, baseline, base_workload or workload, metric)
        num, den = (base, mine) if speedup else (mine, base)
        if not (math.isnan(num) or math.isnan(den)) and den != 0:
            out.append(num / den)
    return out


def fmt(value: float, decimals: int) -> str:
    if abs(value) < 10**-decimals and value != 0:
        return f"{value:.2g}"
    return f"{value:,.{decimals}f}"


def cell(vals: list[float], decimals: int = 1, runs: int = 0) -> str:
    if not vals:
        return "n/a"
    mid = fmt(statistics.median(vals), decimals)
    if len(vals) == 1:
        text = mid
    else:
        text = f"{mid} ({fmt(min(vals), decimals)}..{fmt(max(vals), decimals)})"
    return text + (f" [{len(vals)}/{runs} runs]" if runs and len(vals) < runs else "")


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except Exception:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> str:
    parts = []
    for name in PACKAGES:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (absent)")
    return ", ".join(parts)


def render(
    records: list[Record], targets: list[str], meta: dict[str, Any], notes: list[str]
) -> str:
    runs = len({r.run for r in records})
    mach = machine()
    lines = [
        "# conveyor benchmark",
        "",
        f"- date: {meta['date']}; runs: {runs}{' (--quick)' if meta.get('quick') else ''}; "
        f"wall time {meta.get('minutes', 0):.1f} min",
        f"- machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory']} RAM, {mach['os']}",
        f"- Python {mach['python']}; {versions()}; redis-server {meta.get('redis', '?')}",
        f"- parameters: {meta.get('params', '')}",
        "",
        "Each cell: median (min..max) over runs; every run starts each server afresh. "
        "The client runs on the same machine.",
        "",
        "## Figures",
        "",
        "| workload | metric | " + " | ".join(targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    present = {(r.target, r.workload) for r in records}
    for workload, metric, label, dec in ROWS:
        if not any((t, workload) in present for t in targets):
            continue
        cells = [
            cell(values(records, t, workload, metric), dec, runs)
            if (t, workload) in present
            else "—"
            for t in targets
        ]
        lines.append(f"| {workload} | {label} | " + " | ".join(cells) + " |")

    baselines = [t for t in targets if t != "conveyor"]
    if "conveyor" in targets and baselines:
        lines += [
            "",
            "## conveyor / baseline, run by run",
            "",
            "Ratio of conveyor's figure to the baseline's in the same run (below 1 is better for "
            "latency, time and RSS; above 1 is better for MB/s and jobs/s).",
            "",
            "| metric | " + " | ".join(f"conveyor / {b}" for b in baselines) + " |",
            "|---|" + "---|" * len(baselines),
        ]
        for workload, metric, label in RATIO_ROWS:
            cells = [cell(ratios(records, workload, metric, b), 3) for b in baselines]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Targets (issues 4 and 16)",
        "",
        "`before`: the figure the issue quoted when it set the goal; `measured`: this run's.",
        "",
        "| issue | target | goal | before | conveyor | baseline | measured (median, min..max) "
        "| result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for goal in GOALS:
        mine = values(records, "conveyor", goal.workload, goal.metric)
        if goal.baseline is None:
            measured, base_cell = mine, "—"
        else:
            measured = ratios(
                records, goal.workload, goal.metric, goal.baseline, goal.base_workload,
                goal.speedup,
            )  # fmt: skip
            base_vals = values(records, goal.baseline, goal.base_workload or goal.workload,
                               goal.metric)  # fmt: skip
            base_cell = f"{goal.baseline}: {cell(base_vals, 1)}"
        if measured:
            ok = (
                all(goal.check(v) for v in measured)
                if goal.every_run
                else goal.check(statistics.median(measured))
            )
            result = "**pass**" if ok else "**MISS**"
        else:
            result = "not measured"
        lines.append(
            f"| {goal.issue} | {goal.label} | {goal.goal} | {goal.before} | {cell(mine, 1)} | "
            f"{base_cell} | {cell(measured, 3)} | {result} |"
        )

    failures = [r for r in records if r.error]
    all_notes = list(notes)
    for rec in records:
        all_notes += [f"{rec.target} {rec.workload} run {rec.run}: {n}" for n in rec.notes]
    all_notes += [f"{r.target} {r.workload} run {r.run} FAILED: {r.error}" for r in failures]
    if all_notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in dict.fromkeys(all_notes)]
    return "\n".join(lines) + "\n"
