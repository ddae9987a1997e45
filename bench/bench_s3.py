"""conveyor on S3 (moto's server mode as the stand-in) beside local storage, in one run.

``python bench/bench_s3.py [--big-mb 1024] [--runs 1] [--img]``

- **W-big-raw on S3**: one big raw-body upload (``probe`` job) into ``conveyor serve`` with
  ``CONVEYOR_STORAGE_URL=s3://...``: MB/s to the 202 and the server tree's RSS growth (the
  harness of bench/workloads.py). Beside it, in the same run, **boto3 ``upload_fileobj``** of the
  same file from disk into the same stand-in: the floor the stand-in allows (8 MiB parts,
  10 threads: boto3's defaults). And the same upload on local storage for reference.
- **W-img** (``--img``) on S3 and on local storage: accept latency p50 / p99.

moto keeps every object in its own process (large ones spill to temporary files), and is
Python: it, not conveyor, sets the ceiling of every S3 number here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inputs import MiB, make_inputs
from bench.targets import VENV_BIN, conveyor_target, free_port, running
from bench.workloads import WORKLOADS, Config, warm_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUCKET = "conveyor-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1"}


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "wb")  # lives as long as moto
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], env={**os.environ, **CREDENTIALS}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    for _ in range(150):
        try:
            client.create_bucket(Bucket=BUCKET)
            return proc, endpoint
        except Exception:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto did not start")


def _boto_credentials() -> dict[str, str]:
    return {"region_name": "us-east-1", "aws_access_key_id": "bench",
            "aws_secret_access_key": "bench"}


def boto3_floor(endpoint: str, path: Path) -> float:
    """MB/s of boto3's ``upload_fileobj`` from disk (its default transfer settings)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    t0 = time.monotonic()
    with open(path, "rb") as fh:
        client.upload_fileobj(fh, BUCKET, f"boto3/{path.name}")
    elapsed = time.monotonic() - t0
    client.delete_object(Bucket=BUCKET, Key=f"boto3/{path.name}")
    return path.stat().st_size / 1e6 / elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--img", action="store_true", help="also W-img on S3 and local")
    p.add_argument("--conveyor-bin", default=str(VENV_BIN / "conveyor"))
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-s3-"))
    moto, endpoint = start_moto(workdir)
    lines: list[str] = []
    try:
        inputs = make_inputs(workdir / "inputs", args.big_mb * MiB)
        # This checkout's conveyor, whichever one the venv has installed.
        here = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        s3_env = {**here, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint,
                  "CONVEYOR_STORAGE_URL": f"s3://{BUCKET}/run"}
        local = dataclasses.replace(conveyor_target(args.conveyor_bin, here), name="local")
        s3 = dataclasses.replace(conveyor_target(args.conveyor_bin, s3_env), name="s3")
        cfg = Config()
        for run in range(1, args.runs + 1):
            plan = [(s3, "W-big-raw"), (local, "W-big-raw")]
            if args.img:
                plan += [(s3, "W-img"), (local, "W-img")]
            for target, workload in plan:
                with running(target, workdir, f"r{run}{target.name}") as server:
                    asyncio.run(warm_up(server, inputs))
                    metrics, notes = asyncio.run(WORKLOADS[workload](server, inputs, cfg))
                shown = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())
                lines.append(f"| {run} | {target.name} | {workload} | {shown} | "
                             f"{'; '.join(notes)} |")
                print(lines[-1], file=sys.stderr, flush=True)
            floor = boto3_floor(endpoint, inputs.big)
            lines.append(f"| {run} | boto3 upload_fileobj | {args.big_mb} MiB | "
                         f"mb_per_s {floor:.1f} | from disk, default TransferConfig |")
            print(lines[-1], file=sys.stderr, flush=True)
    finally:
        moto.kill()
        moto.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"# conveyor on S3 (moto) vs local, {date}, W-big {args.big_mb} MiB", "",
                      "| run | target | workload | metrics | notes |", "|---|---|---|---|---|",
                      *lines, ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "s3.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
