"""URL import: how fast a worker fetches a big file, beside a plain download of it, in one run.

``python bench/bench_url_import.py [--big-mb 512] [--runs 3]``

- **W-url**: ``POST /v1/jobs`` with ``{"url": ..., "pipeline": "probe"}`` into ``conveyor serve``
  (one embedded worker, local storage); the origin is ``python -m http.server`` on 127.0.0.1
  serving the generated big file. Reported: MB/s from the POST to the job's ``input.sha256``
  being set (fetched, hashed, durable in storage, recorded), the 202's latency, and the server
  tree's peak RSS growth during the fetch (sampled every 10 ms plus the kernel's VmHWM).
- **floor**: the same file downloaded by httpx in this process, hashed and written to a file
  (no fsync): what a client alone does with the same origin.
- **W-big-raw**: the same file uploaded as a raw body to the same kind of server (for scale).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inputs import MiB, make_inputs
from bench.targets import (
    VENV_BIN,
    RssSampler,
    conveyor_target,
    free_port,
    reset_peak_rss,
    running,
    tree_peak_rss,
)
from bench.workloads import WORKLOADS, Config, warm_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def start_origin(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.head(base + "/", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the origin did not start")


def floor(url: str, out: Path) -> float:
    """MB/s of a plain streamed download, hashed and written to ``out``."""
    digest = hashlib.sha256()
    size = 0
    t0 = time.monotonic()
    with httpx.stream("GET", url, timeout=60) as resp, open(out, "wb") as fh:
        for chunk in resp.iter_raw():
            digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    elapsed = time.monotonic() - t0
    out.unlink()
    return size / 1e6 / elapsed


def w_url(base_url: str, pids: list[int], url: str, size: int) -> dict[str, float]:
    reset_peak_rss(pids)
    with RssSampler(pids, interval=0.01) as sampler:
        t0 = time.monotonic()
        resp = httpx.post(f"{base_url}/v1/jobs", json={"url": url, "pipeline": "probe"},
                          timeout=30)
        accepted = time.monotonic() - t0
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        while True:
            job = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=30).json()
            if job["input"]["sha256"] is not None or job["state"] == "failed":
                break
            time.sleep(0.01)
        fetched = time.monotonic() - t0
    assert job["state"] != "failed", job
    assert job["input"]["size"] == size, job
    growth = max(sampler.peak, tree_peak_rss(pids)) - sampler.first
    return {"mb_per_s": size / 1e6 / fetched, "accept_ms": accepted * 1000,
            "rss_growth_mb": growth / 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--big-mb", type=int, default=512)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--conveyor-bin", default=str(VENV_BIN / "conveyor"))
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-url-"))
    rows: dict[str, list[dict[str, float]]] = {"W-url": [], "floor": [], "W-big-raw": []}
    try:
        inputs = make_inputs(workdir / "inputs", args.big_mb * MiB)
        origin, base = start_origin(inputs.big.parent)
        try:
            url = f"{base}/{inputs.big.name}"
            size = inputs.big.stat().st_size
            here = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                    "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE": "127.0.0.1/32",
                    "CONVEYOR_WORKERS": "1"}
            target = conveyor_target(args.conveyor_bin, here)
            for run in range(1, args.runs + 1):
                with running(target, workdir, f"r{run}url") as server:
                    asyncio.run(warm_up(server, inputs))
                    rows["W-url"].append(w_url(server.base_url, server.pids(), url, size))
                rows["floor"].append({"mb_per_s": floor(url, workdir / "floor.bin")})
                with running(target, workdir, f"r{run}raw") as server:
                    asyncio.run(warm_up(server, inputs))
                    metrics, _notes = asyncio.run(WORKLOADS["W-big-raw"](server, inputs,
                                                                         Config()))
                    rows["W-big-raw"].append(dict(metrics))
                for name, got in rows.items():
                    print(f"run {run} {name}: {got[-1]}", file=sys.stderr, flush=True)
        finally:
            origin.kill()
            origin.wait(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def cell(name: str, key: str) -> str:
        values = [r[key] for r in rows[name] if key in r]
        if not values:
            return "-"
        return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"

    ratio = statistics.median(r["mb_per_s"] for r in rows["W-url"]) / statistics.median(
        r["mb_per_s"] for r in rows["floor"])
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"# URL import, {date}, {args.big_mb} MiB, median (min..max) of {args.runs} runs", "",
        "| workload | MB/s | 202 ms | RSS growth MB |", "|---|---|---|---|",
        f"| W-url (fetched, hashed, stored, recorded) | {cell('W-url', 'mb_per_s')} | "
        f"{cell('W-url', 'accept_ms')} | {cell('W-url', 'rss_growth_mb')} |",
        f"| floor (httpx download, hashed, to a file) | {cell('floor', 'mb_per_s')} | | |",
        f"| W-big-raw (the same file uploaded) | {cell('W-big-raw', 'mb_per_s')} | | "
        f"{cell('W-big-raw', 'rss_growth_mb')} |", "",
        f"W-url / floor: {ratio:.2f}", ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "url_import.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
