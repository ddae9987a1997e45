"""Runs the benchmark: ``python bench/run.py [--quick] [--runs N] [--targets ...]``.

Each run starts every target afresh for every workload, in turn, on a free loopback port, and
stops it (its whole process group) afterwards. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inputs import Inputs, MiB, make_inputs
from bench.report import Record, render
from bench.targets import (
    VENV_BIN,
    Target,
    bgtasks_target,
    celery_target,
    conveyor_celery_target,
    conveyor_target,
    running,
)
from bench.workloads import WORKLOADS, Config, warm_up

RESULTS = Path(__file__).resolve().parent / "results"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

STANDING_NOTES = [
    "bgtasks: `GET /status/{id}` and its in-memory dict are a courtesy to the harness so it can "
    "tell when jobs end; the real BackgroundTasks pattern has no status at all.",
    "Peak RSS sums the server process and all its descendants (psutil, every 100 ms): for Celery "
    "the uvicorn process plus the worker and its two prefork children; Redis is not counted.",
    "W-img latency runs from each request's scheduled send time to its response (open loop). "
    "W-big: MB/s = bytes / time to the upload's response; RSS growth = the tree's peak during "
    "upload and job (the larger of 10 ms samples and the sum of the kernel's per-process VmHWM, "
    "reset just before) minus its RSS just before. Job kind for W-big: bgtasks/celery `noop`, "
    "conveyor `probe`.",
    "The client (httpx, 32 small connection pools used round-robin) shares the 2 cores with the "
    "server, and the machine is shared with other work: compare ratios within a run.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="short workloads, 100 MiB W-big, 1 run")
    p.add_argument("--runs", type=int, help="runs per target (default 3, or 1 with --quick)")
    p.add_argument("--targets", default="conveyor,bgtasks,celery")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--big-mb", type=int, help="W-big size in MiB (default 1024, quick 100)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    p.add_argument("--readme", type=Path, help=f"also replace {README_START}..{README_END} here")
    p.add_argument("--conveyor-bin", default=str(VENV_BIN / "conveyor"))
    p.add_argument("--conveyor-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/13",
                   help="broker of the conveyor-celery target (its Redis db is flushed)")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432",
                   help="PostgreSQL server of the conveyor-celery target (a database per run)")
    p.add_argument("--max-minutes", type=float, default=120.0, help="stop starting new work")
    return p.parse_args(argv)


def build_targets(args: argparse.Namespace) -> list[Target]:
    env = dict(kv.split("=", 1) for kv in args.conveyor_env)
    factories: dict[str, Callable[[], Target]] = {
        "conveyor": lambda: conveyor_target(args.conveyor_bin, env),
        "bgtasks": bgtasks_target,
        "celery": lambda: celery_target(args.redis_url),
        "conveyor-celery": lambda: conveyor_celery_target(
            args.conveyor_bin, args.broker_url, args.pg_url),
    }
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise SystemExit(f"unknown target(s): {', '.join(unknown)}")
    return [factories[n]() for n in names]


def redis_version(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def run_one(
    target: Target, workload: str, run: int, inputs: Inputs, cfg: Config, workdir: Path
) -> Record:
    rec = Record(run=run, target=target.name, workload=workload)
    # The disk starts clean: the dirty pages the previous workload left (a 1 GiB upload,
    # another target's temp files) are written out now, not while this one's fsyncs wait.
    os.sync()
    started = time.monotonic()
    try:
        with running(target, workdir, f"r{run}") as server:
            asyncio.run(warm_up(server, inputs))
            cpu = time.process_time()
            t0 = time.monotonic()
            metrics, notes = asyncio.run(WORKLOADS[workload](server, inputs, cfg))
            # Diagnostic: near 1.0 means the client itself was the bottleneck.
            metrics["client_cpu_share"] = (time.process_time() - cpu) / (time.monotonic() - t0)
            rec.metrics, rec.notes = metrics, notes
    except Exception as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.seconds = time.monotonic() - started
    return rec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    cfg = Config.quick() if args.quick else Config()
    big_bytes = (args.big_mb or (100 if args.quick else 1024)) * MiB
    targets = build_targets(args)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if bad := [w for w in workloads if w not in WORKLOADS]:
        raise SystemExit(f"unknown workload(s): {', '.join(bad)}")
    redis = redis_version(args.redis_url) if any(t.name == "celery" for t in targets) else "-"
    if redis.startswith("unreachable"):
        raise SystemExit(f"celery target needs Redis at {args.redis_url}: {redis}")

    # SIGTERM unwinds like Ctrl-C, so every started server group is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    deadline = t_start + args.max_minutes * 60
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    records: list[Record] = []
    notes = list(STANDING_NOTES)
    try:
        print(f"generating inputs in {workdir} ...", file=sys.stderr)
        inputs = make_inputs(workdir / "inputs", big_bytes)
        for run in range(1, runs + 1):
            for target in targets:
                for workload in workloads:
                    if workload == "W-big-raw" and target.raw_path is None:
                        continue
                    if time.monotonic() > deadline:
                        notes.append(f"stopped early: --max-minutes {args.max_minutes} reached")
                        break
                    rec = run_one(target, workload, run, inputs, cfg, workdir)
                    records.append(rec)
                    shown = rec.error or json.dumps(
                        {k: round(v, 2) for k, v in rec.metrics.items()}
                    )
                    print(
                        f"run {run} {target.name:9} {workload:12} {rec.seconds:6.1f}s  {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    params = (
        f"W-img {cfg.img_rate:g}/s x {cfg.img_seconds:g} s; W-img-batch {cfg.batch}; "
        f"W-big {big_bytes // MiB} MiB; W-noop {cfg.noop_jobs} jobs, concurrency "
        f"{cfg.noop_concurrency}; W-burst {cfg.burst} x 1 MiB"
    )
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "minutes": (time.monotonic() - t_start) / 60,
        "redis": redis,
        "params": params,
    }
    for target in targets:
        notes += [f"{target.name}: {n}" for n in target.notes]
    text = render(records, [t.name for t in targets], meta, notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "records": [dataclasses.asdict(r) for r in records]}, indent=1)
    )
    if args.readme and args.quick:
        print("--quick: README not updated (it shows full runs only)", file=sys.stderr)
    elif args.readme:
        update_readme(args.readme, text)
    print(text)
    return 0


def update_readme(path: Path, text: str) -> None:
    """Replaces what lies between the marker lines (each alone on its line) with the report."""
    body = path.read_text()
    start, end = body.find(f"\n{README_START}\n"), body.find(f"\n{README_END}")
    if start < 0 or end < start:
        print(f"{path}: no {README_START}/{README_END} lines, not updated", file=sys.stderr)
        return
    section = text.split("\n", 1)[1].replace("\n## ", "\n#### ")
    body = body[: start + len(README_START) + 2] + section.lstrip("\n") + body[end:]
    path.write_text(body)


if __name__ == "__main__":
    sys.exit(main())
