"""What API keys cost per request: the same requests with keys on beside keys off, same run.

Run: ``python bench/bench_auth.py [--requests 400] [--runs 3]``.

Two ``conveyor serve --no-workers`` processes on loopback, fresh data dirs: ``off`` runs open
(no key, ``CONVEYOR_AUTH=auto``), ``on`` needs a key (``CONVEYOR_AUTH=keys``, a key made with
``conveyor keys create`` before the start). With no workers, only the HTTP path is measured.
One client sends, alternating between the two servers so that both see the same machine load:

- **accept** (W-img's request shape): ``POST /v1/jobs`` of a 64 KiB file, time to the 202;
- **poll** (W-noop's read): ``GET /v1/jobs/{id}`` of a job, time to the 200.

Each server is warmed up first (the key's lookup is then cached for 0.5 s at a time, as in
steady traffic). Results (p50 and p99 per server, p50 difference) go to ``bench/results/auth.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "auth.md"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    def __init__(self, name: str, keys: bool) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-auth-{name}-"))
        self.port = _port()
        path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        self.env.update(PYTHONPATH=path, CONVEYOR_DATA_DIR=str(self.dir),
                        CONVEYOR_LOG_LEVEL="WARNING", CONVEYOR_AUTH="keys" if keys else "auto")
        self.headers: dict[str, str] = {}
        if keys:
            made = subprocess.run(
                [sys.executable, "-m", "conveyor", "keys", "create", "--json"],
                env=self.env, capture_output=True, text=True, check=True)
            self.headers = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--no-workers", "--no-access-log",
             "--port", str(self.port)], env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(requests: int) -> dict[str, dict[str, list[float]]]:
    servers = [Serve("off", keys=False), Serve("on", keys=True)]
    payload = os.urandom(64 * 1024)
    out: dict[str, dict[str, list[float]]] = {s.name: {"accept": [], "poll": []}
                                             for s in servers}
    try:
        clients = {s.name: httpx.Client(base_url=s.url, headers=s.headers, timeout=30)
                   for s in servers}
        job = {}
        for s in servers:  # warm-up
            for _ in range(20):
                resp = clients[s.name].post("/v1/jobs?pipeline=noop&filename=w.bin",
                                            content=payload)
                assert resp.status_code == 202, resp.text
                job[s.name] = resp.json()["id"]
        for i in range(requests):
            order = servers if i % 2 == 0 else servers[::-1]
            for s in order:
                http = clients[s.name]
                t0 = time.perf_counter()
                resp = http.post("/v1/jobs?pipeline=noop&filename=b.bin", content=payload)
                t1 = time.perf_counter()
                assert resp.status_code == 202, resp.text
                got = http.get(f"/v1/jobs/{job[s.name]}")
                t2 = time.perf_counter()
                assert got.status_code == 200
                out[s.name]["accept"].append((t1 - t0) * 1000)
                out[s.name]["poll"].append((t2 - t1) * 1000)
        for http in clients.values():
            http.close()
    finally:
        for s in servers:
            s.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    rows = []
    diffs: dict[str, list[float]] = {"accept": [], "poll": []}
    for n in range(args.runs):
        got = run(args.requests)
        for kind in ("accept", "poll"):
            off, on = got["off"][kind], got["on"][kind]
            diff = statistics.median(on) - statistics.median(off)
            diffs[kind].append(diff)
            rows.append(f"| {n + 1} | {kind} | {statistics.median(off):.2f} | {_pct(off, .99):.2f} "
                        f"| {statistics.median(on):.2f} | {_pct(on, .99):.2f} | {diff:+.2f} |")
    summary = ", ".join(f"{k} p50 difference (median of runs) {statistics.median(v):+.2f} ms"
                        for k, v in diffs.items())
    text = "\n".join([
        "# API keys on beside off (bench/bench_auth.py)", "",
        f"{platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at "
        f"the end; {args.requests} requests per kind per server per run, alternating.", "",
        "| run | request | off p50 ms | off p99 ms | on p50 ms | on p99 ms | on - off p50 ms |",
        "|---|---|---|---|---|---|---|", *rows, "", summary, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
