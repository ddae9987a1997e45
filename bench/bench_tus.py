"""W-tus: a 1 GB file uploaded with tuspy (checksums on) to conveyor and, in the same run, to
the Node reference server (``@tus/server`` + ``@tus/file-store``).

Run: ``python bench/bench_tus.py [--size-mb 1024] [--chunk-mb 64] [--runs 3] [--s3]``.

Per run and server: a fresh server process (conveyor: ``conveyor serve --no-workers``, a fresh
data dir under ``bench/.cache``; the reference: ``node bench/tusnode/server.mjs`` with a fresh
directory), one small warm-up upload, then the timed upload: tuspy ``Uploader(upload_checksum=
True, chunk_size=--chunk-mb)`` from creation to the last PATCH's answer (for conveyor that
answer comes after the job's commit). The server's RSS growth is its peak (``VmHWM``) minus its
RSS after the warm-up. The reference server is installed with ``npm ci`` from
``bench/tusnode/package-lock.json`` when its ``node_modules`` is missing.

The same run times conveyor with its own client (``Client.submit_resumable``: one PATCH, the
job's sha256 checked at the end). Results go to ``bench/results/tus.md``; goal (issue 15):
conveyor >= 2x faster than the reference, RSS growth <= 50 MB.

``--s3`` adds, in the same run, conveyor on S3 (moto's server mode, as ``bench_s3.py``): each
PATCH streams into an object of its own and the last one makes the input of them (no upload is
staged on disk). moto is Python and keeps objects in its own process: it, not conveyor, sets
that row's ceiling. Results then go to ``bench/results/tus-s3.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tusclient import client as tus_client

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))
NODE_DIR = ROOT / "bench" / "tusnode"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "tus.md"
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    endpoint: str


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.options(url, timeout=1)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def conveyor(folder: Path, size: int, s3: str | None = None) -> Iterator[Running]:
    """``conveyor serve`` on local storage, or on the S3 endpoint ``s3``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_DATA_DIR": str(folder), "CONVEYOR_LOG_LEVEL": "WARNING",
                "CONVEYOR_MAX_UPLOAD_BYTES": str(size * 2), "CONVEYOR_MIN_FREE_BYTES": "0"})
    if s3 is not None:
        from bench.bench_s3 import BUCKET, CREDENTIALS

        env.update({**CREDENTIALS, "AWS_ENDPOINT_URL": s3,
                    "CONVEYOR_STORAGE_URL": f"s3://{BUCKET}/{folder.parent.name}"})
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "serve", "--port", str(port),
                             "--no-workers"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}/v1/uploads"
        wait_up(endpoint, proc)
        yield Running(proc, endpoint)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def node_modules() -> None:
    if (NODE_DIR / "node_modules" / "@tus" / "server").is_dir():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                   timeout=600)


@contextlib.contextmanager
def reference(folder: Path) -> Iterator[Running]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["node", "server.mjs", str(port), str(folder)], cwd=NODE_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}/files"
        wait_up(endpoint, proc)
        yield Running(proc, endpoint)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def upload(endpoint: str, source: Path, chunk: int) -> float:
    tus = tus_client.TusClient(endpoint)
    with open(source, "rb") as stream:
        up = tus.uploader(file_stream=stream, chunk_size=chunk, upload_checksum=True,
                          metadata={"filename": source.name})
        started = time.perf_counter()
        up.upload()
        return time.perf_counter() - started


def upload_own(endpoint: str, source: Path, chunk: int) -> float:
    """conveyor's own client: one PATCH (``chunk`` unused), the job's sha256 checked at the
    end against the file's, hashed while it was sent."""
    from conveyor.client import Client

    with Client(endpoint.removesuffix("/v1/uploads")) as client:
        started = time.perf_counter()
        client.submit_resumable(source, pipeline="probe")
        return time.perf_counter() - started


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: Running, source: Path, warmup: Path, chunk: int,
            send: Callable[[str, Path, int], float] = upload) -> tuple[float, float, float]:
    send(server.endpoint, warmup, chunk)
    base, cpu = status_kb(server.proc.pid, "VmRSS"), cpu_s(server.proc.pid)
    seconds = send(server.endpoint, source, chunk)
    growth_mb = (status_kb(server.proc.pid, "VmHWM") - base) / 1024
    return seconds, growth_mb, cpu_s(server.proc.pid) - cpu


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    block = os.urandom(MiB)
    with open(path, "wb") as fh:
        for i in range(size // MiB):
            fh.write(block[i % 997:] + block[: i % 997])  # no two blocks alike
        fh.write(os.urandom(size % MiB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--chunk-mb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--s3", action="store_true",
                        help="add conveyor on S3 (moto's server mode) to the run")
    args = parser.parse_args()
    size, chunk = args.size_mb * MiB, args.chunk_mb * MiB
    node_modules()
    CACHE.mkdir(parents=True, exist_ok=True)
    source = CACHE / f"tus-{args.size_mb}m.bin"
    make_file(source, size)
    warmup = CACHE / "tus-warmup.bin"
    make_file(warmup, MiB)
    own = "conveyor, with conveyor's client"
    results: dict[str, list[tuple[float, float, float]]] = {"conveyor": [], "@tus/server": [],
                                                            own: []}
    moto: subprocess.Popen[bytes] | None = None
    endpoint = None
    if args.s3:
        from bench.bench_s3 import start_moto

        results["conveyor on S3 (moto)"] = []
        moto, endpoint = start_moto(CACHE)
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                with conveyor(Path(tmp) / "conveyor", size) as srv:
                    results["conveyor"].append(measure(srv, source, warmup, chunk))
                with conveyor(Path(tmp) / "conveyor-own", size) as srv:
                    results[own].append(measure(srv, source, warmup, chunk, upload_own))
                with reference(Path(tmp) / "node") as srv:
                    results["@tus/server"].append(measure(srv, source, warmup, chunk))
                if endpoint is not None:
                    with conveyor(Path(tmp) / "conveyor-s3", size, endpoint) as srv:
                        results["conveyor on S3 (moto)"].append(
                            measure(srv, source, warmup, chunk))
            print(f"run {run + 1}: " + ", ".join(
                f"{name} {r[-1][0]:.2f} s +{r[-1][1]:.0f} MB {r[-1][2]:.1f} CPU s"
                for name, r in results.items()),
                flush=True)
    finally:
        if moto is not None:
            moto.kill()
            moto.wait(10)
    med = {name: tuple(statistics.median(x[i] for x in r) for i in range(3))
           for name, r in results.items()}
    ratio = med["@tus/server"][0] / med["conveyor"][0]
    lines = [
        f"# W-tus: {args.size_mb} MiB with tuspy (checksums on), conveyor beside @tus/server",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"{args.size_mb} MiB file, tuspy chunk {args.chunk_mb} MiB (Upload-Checksum sha1 on "
        f"every PATCH), {args.runs} runs, medians.",
        "",
        f"Machine load (1-minute average) at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "| server | time (s) | MB/s | server RSS growth (MB) | server CPU (s) | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        seconds, growth, cpu = med[name]
        runs = ", ".join(f"{x[0]:.2f}" for x in r)
        lines.append(f"| {name} | {seconds:.2f} | {size / MiB / seconds:.0f} | {growth:.1f} | "
                     f"{cpu:.2f} | {runs} |")
    lines += ["", f"conveyor is {ratio:.2f}x the speed of @tus/server "
              f"(goal >= 2x; RSS growth goal <= 50 MB).", "",
              f"\"{own}\": `Client.submit_resumable` sends the file in one PATCH with no "
              "per-PATCH checksum (the job's sha256 is checked against the file's at the end, "
              "hashed as it was sent), then reads the job back."]
    if args.s3:
        lines += ["", "conveyor on S3: each PATCH streams into an object of its own, and the "
                  "last makes the input of them (one chunk: that object; several: part copies "
                  "inside S3). moto, a Python process, stores and copies every byte itself."]
    (RESULTS.with_name("tus-s3.md") if args.s3 else RESULTS).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
