"""SSE fan-out: N concurrent ``GET /v1/events`` streams on one ``conveyor serve``.

Run: ``python bench/bench_sse.py [--subscribers 1000] [--seconds 20] [--runs 3]
[--compare ../main/src]``. With ``--compare``, each run is preceded by a run of a baseline
served from that source tree, so both see the same host load, and the report adds the
baseline's table and the ratios of the medians.

Per run a fresh ``conveyor serve --workers 1`` (own process group, free loopback port, fresh
temp data dir, test processors, ``CONVEYOR_PROGRESS_INTERVAL_S=0.02``) is started. One client
process opens N SSE streams with raw ``asyncio.open_connection`` sockets (HTTP/1.1 written and
chunked/SSE framing parsed by hand), waits until ``/metrics`` reports N subscribers, then keeps
``progress`` jobs running one at a time for ``--seconds``. For every event every subscriber
receives, ``receive_time - at`` is recorded (``at`` = the event's commit time, ms precision).
Server CPU (server process alone, and the whole process tree) and the client's own CPU are
measured over the same window; the server's peak RSS is its ``VmHWM``.

Results go to ``bench/results/sse.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "sse.md"
PLUGINS = REPO / "tests" / "plugins"
HOST = "127.0.0.1"
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled"}
TARGET_P99_MS = 250.0
MAX_RECONNECTS = 20  # per subscriber, per run
CONNECT_CONCURRENCY = 64  # handshakes in flight while opening the streams


# --------------------------------------------------------------------------- HTTP by hand


class Dechunker:
    """Incremental decoder for ``Transfer-Encoding: chunked``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0  # payload bytes still to come in the current chunk
        self.need_crlf = False  # the CRLF after a chunk's payload

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Return (payload decoded so far, True when the terminating 0-chunk was seen)."""
        buf = self.buf
        buf += data
        out = bytearray()
        pos = 0
        while True:
            if self.left:
                take = min(self.left, len(buf) - pos)
                if take == 0:
                    break
                out += buf[pos:pos + take]
                pos += take
                self.left -= take
                if self.left:
                    break
                self.need_crlf = True
            if self.need_crlf:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self.need_crlf = False
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(bytes(buf[pos:end]).split(b";")[0], 16)
            pos = end + 2
            if size == 0:
                del buf[:]
                return bytes(out), True
            self.left = size
        del buf[:pos]
        return bytes(out), False


async def http(
    port: int, method: str, path: str, body: bytes = b"",
    headers: dict[str, str] | None = None, timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on its own connection (``Connection: close``); returns (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        rest, _ = Dechunker().feed(rest)
    return status, rest


# --------------------------------------------------------------------------- the client


@dataclass
class Collector:
    """Shared by every subscriber of a run (one event loop, so no locking)."""

    n: int
    at: dict[bytes, float] = field(default_factory=dict)  # event id -> commit time (epoch s)
    first_lat: array[float] = field(default_factory=lambda: array("d"))
    lat: array[float] = field(default_factory=lambda: array("d"))
    delivered: list[int] = field(default_factory=list)
    opened: int = 0
    disconnects: int = 0
    disconnected: set[int] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)
    finished_jobs: set[str] = field(default_factory=set)
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # distinct events by type

    def __post_init__(self) -> None:
        self.delivered = [0] * self.n

    def learn(self, key: bytes, block: bytes, now: float) -> float:
        """First sighting of an event id: parse its JSON once for every subscriber."""
        start = block.find(b"\ndata: ")
        payload: dict[str, Any] = json.loads(block[start + 7:])
        at = datetime.fromisoformat(payload["at"]).timestamp()
        self.at[key] = at
        self.first_lat.append(now - at)
        kind = str(payload.get("type"))
        self.types[kind] = self.types.get(kind, 0) + 1
        if kind in TERMINAL:
            job_id = str(payload.get("job_id"))
            self.finished_jobs.add(job_id)
            done = self.waiting.pop(job_id, None)
            if done is not None:
                done.set()
        return at

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def subscriber(
    idx: int, port: int, col: Collector, opening: asyncio.Semaphore, stop: asyncio.Event
) -> None:
    last_id: bytes | None = None
    attempt = 0
    cache = col.at
    lat_append = col.lat.append
    while attempt <= MAX_RECONNECTS and not stop.is_set():
        attempt += 1
        writer: asyncio.StreamWriter | None = None
        try:
            async with opening:
                reader, stream = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port), 15.0)
                writer = stream
                request = (f"GET /v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                           "Accept: text/event-stream\r\nCache-Control: no-cache\r\n")
                if last_id is not None:
                    request += f"Last-Event-ID: {last_id.decode()}\r\n"
                stream.write((request + "\r\n").encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15.0)
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                raise ValueError(f"HTTP {status}")
            if attempt == 1:
                col.opened += 1
            dechunk = Dechunker() if b"transfer-encoding: chunked" in head.lower() else None
            sse = bytearray()
            count = 0
            while True:
                data = await reader.read(262144)
                now = time.time()
                if not data:
                    break
                eof = False
                if dechunk is not None:
                    data, eof = dechunk.feed(data)
                sse += data
                end = sse.rfind(b"\n\n")
                if end >= 0:
                    blocks = bytes(sse[:end]).split(b"\n\n")
                    del sse[:end + 2]
                    for block in blocks:
                        if not block.startswith(b"id: "):
                            continue  # "retry:" or a keep-alive comment
                        key = block[4:block.find(b"\n")]
                        at = cache.get(key)
                        if at is None:
                            at = col.learn(key, block, now)
                        lat_append(now - at)
                        last_id = key
                        count += 1
                    col.delivered[idx] += count
                    count = 0
                if eof:
                    break
            col.error("stream ended by the server")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:
            col.error(f"{type(exc).__name__}: {exc}"[:120])
        finally:
            if writer is not None:
                writer.close()
        if stop.is_set():
            return
        col.disconnects += 1
        col.disconnected.add(idx)
        await asyncio.sleep(0.2)


async def metric(port: int, name: str) -> float | None:
    status, body = await http(port, "GET", "/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def drive_jobs(port: int, col: Collector, deadline: float, events: int) -> int:
    """Submit one ``progress`` job at a time until ``deadline``; return how many finished."""
    path = "/v1/jobs?pipeline=progress&options=" + quote(json.dumps({"events": events}))
    jobs = 0
    while time.monotonic() < deadline:
        status, body = await http(port, "POST", path, b"x",
                                  {"Content-Type": "application/octet-stream"})
        if status not in (200, 202):
            raise RuntimeError(f"job submission failed: HTTP {status} {body[:200]!r}")
        job_id = str(json.loads(body)["id"])
        done = asyncio.Event()
        col.waiting[job_id] = done
        if job_id in col.finished_jobs:
            done.set()
        give_up = time.monotonic() + 60.0
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 2.0)
            if done.is_set():
                break
            # No subscriber has seen the terminal event yet: ask the API directly.
            status, body = await http(port, "GET", f"/v1/jobs/{job_id}")
            if status == 200 and json.loads(body).get("state") in (
                    "succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > give_up:
                raise RuntimeError(f"job {job_id} did not finish within 60 s")
        col.waiting.pop(job_id, None)
        jobs += 1
    return jobs


# --------------------------------------------------------------------------- server + sampling


class Sampler(threading.Thread):
    """CPU time of the server process and of its whole tree; peak RSS of the server."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="sampler")
        self.server = psutil.Process(pid)
        self.procs: dict[int, psutil.Process] = {pid: self.server}
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.lock = threading.Lock()
        self.halt = threading.Event()

    @staticmethod
    def host_busy() -> float:
        """CPU seconds the whole machine has spent busy (every process, every core)."""
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def sample(self) -> tuple[float, float]:
        """(server CPU s, tree CPU s) now; dead children keep their last reading."""
        with self.lock:
            with contextlib.suppress(psutil.Error):
                for child in self.server.children(recursive=True):
                    self.procs.setdefault(child.pid, child)
            for pid, proc in list(self.procs.items()):
                try:
                    t = proc.cpu_times()
                    self.cpu[pid] = t.user + t.system
                    if pid == self.server.pid:
                        self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
                except psutil.Error:
                    del self.procs[pid]
            return self.cpu.get(self.server.pid, 0.0), sum(self.cpu.values())

    def run(self) -> None:
        while not self.halt.wait(0.25):
            self.sample()

    def hwm_bytes(self) -> int:
        """VmHWM (the kernel's peak RSS) of the server, or the sampled peak."""
        try:
            text = Path(f"/proc/{self.server.pid}/status").read_text()
            match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
            if match:
                return max(int(match.group(1)) * 1024, self.peak_rss)
        except OSError:
            pass
        return self.peak_rss


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def start_server(folder: Path, port: int, interval: float,
                 source: Path | None = None) -> subprocess.Popen[bytes]:
    """``source``: a ``src`` directory to serve from instead of the installed conveyor."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    paths = (str(PLUGINS), str(source) if source else None, env.get("PYTHONPATH"))
    env.update(
        CONVEYOR_DATA_DIR=str(folder / "data"),
        CONVEYOR_PROCESSORS="conveyor_testprocs",
        CONVEYOR_PROGRESS_INTERVAL_S=str(interval),
        CONVEYOR_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
    )
    exe = Path(sys.executable).parent / "conveyor"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "conveyor"]
    log = open(folder / "server.log", "wb")  # the child keeps its own copy
    try:
        return subprocess.Popen(
            [*argv, "serve", "--host", HOST, "--port", str(port), "--workers", "1"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole
        )
    finally:
        log.close()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    # Whatever is left of the group (the worker included) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            status, _ = await http(port, "GET", "/healthz", timeout=2.0)
            if status == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("server not healthy within 30 s")


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    subscribers: int
    connected: int
    jobs: int
    events: int  # distinct events committed and seen
    expected: int  # events x subscribers
    delivered: int
    disconnects: int
    disconnected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_p99_ms: float
    window_s: float
    server_cpu: float  # % of one core
    tree_cpu: float
    rss_mb: float
    client_cpu: float  # client CPU s / wall s, %
    other_cpu: float  # machine busy minus server tree minus client, % of one core
    errors: dict[str, int]
    types: dict[str, int]
    log_issues: list[str]

    @property
    def cpu_ms_per_event(self) -> float:
        """Server CPU per distinct event, delivered to every subscriber (load-independent)."""
        return 10 * self.server_cpu * self.window_s / self.events if self.events else float("nan")


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


async def measure(port: int, proc: subprocess.Popen[bytes], args: argparse.Namespace,
                  sampler: Sampler) -> RunResult:
    n: int = args.subscribers
    await wait_healthy(port, proc)
    col = Collector(n)
    stop = asyncio.Event()
    opening = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [asyncio.create_task(subscriber(i, port, col, opening, stop), name=f"sub-{i}")
             for i in range(n)]
    try:
        # All N streams open and registered with the hub.
        deadline = time.monotonic() + 60.0 + n / 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            with contextlib.suppress(OSError, TimeoutError):
                if (await metric(port, "conveyor_event_subscribers") or 0) >= n:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {col.opened}/{n} streams open after the deadline")
            await asyncio.sleep(0.25)
        print(f"  {n} subscribers connected; driving jobs for {args.seconds} s", flush=True)

        sampler.start()
        server0, tree0 = await asyncio.to_thread(sampler.sample)
        cpu0, wall0, host0 = time.process_time(), time.monotonic(), sampler.host_busy()
        jobs = await drive_jobs(port, col, wall0 + args.seconds, args.events)
        server1, tree1 = await asyncio.to_thread(sampler.sample)
        cpu1, wall1, host1 = time.process_time(), time.monotonic(), sampler.host_busy()
        window = wall1 - wall0

        # Let every subscriber catch up with everything committed (bounded).
        drain_until = time.monotonic() + 15.0
        while time.monotonic() < drain_until:
            await asyncio.sleep(0.2)
            if sum(col.delivered) >= len(col.at) * n:
                break
        await asyncio.sleep(0.3)
        stop.set()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=10.0)

    lat = sorted(col.lat)
    first = sorted(col.first_lat)
    return RunResult(
        subscribers=n,
        connected=col.opened,
        jobs=jobs,
        events=len(col.at),
        expected=len(col.at) * n,
        delivered=sum(col.delivered),
        disconnects=col.disconnects,
        disconnected=len(col.disconnected),
        p50_ms=pct(lat, 0.50) * 1000,
        p99_ms=pct(lat, 0.99) * 1000,
        max_ms=(lat[-1] if lat else float("nan")) * 1000,
        first_p99_ms=pct(first, 0.99) * 1000,
        window_s=window,
        server_cpu=100 * (server1 - server0) / window,
        tree_cpu=100 * (tree1 - tree0) / window,
        rss_mb=sampler.hwm_bytes() / 1e6,
        client_cpu=100 * (cpu1 - cpu0) / window,
        other_cpu=max(0.0, 100 * ((host1 - host0) - (tree1 - tree0) - (cpu1 - cpu0)) / window),
        errors=dict(col.errors),
        types=dict(col.types),
        log_issues=[],
    )


def scan_log(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keep = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Exception", re.I)
    return [line for line in lines if keep.search(line)]


def one_run(args: argparse.Namespace, index: int, source: Path | None = None) -> RunResult:
    folder = Path(tempfile.mkdtemp(prefix="conveyor-bench-sse-"))
    port = free_port()
    proc = start_server(folder, port, args.progress_interval, source)
    sampler = Sampler(proc.pid)
    print(f"run {index}: server pid {proc.pid} on port {port}, data {folder}", flush=True)
    try:
        result = asyncio.run(
            asyncio.wait_for(measure(port, proc, args, sampler),
                             timeout=args.seconds + 240 + args.subscribers / 10))
    finally:
        sampler.halt.set()
        stop_server(proc)
        issues = scan_log(folder / "server.log")
        if args.keep_logs:
            print(f"  server log kept: {folder / 'server.log'}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    result.log_issues = issues
    return result


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def spread(values: list[float], fmt: str) -> str:
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}..{format(max(values), fmt)})")


def table(results: list[RunResult]) -> list[str]:
    """One row per run and a median (min..max) row."""
    head = ("| run | jobs | events | delivered / expected | disconnects (subs) "
            "| p50 ms | p99 ms | max ms | first-sub p99 ms | server CPU % | tree CPU % "
            "| server RSS MB | client CPU % | other CPU % | server CPU ms / event |")
    rows = [head, "|" + "---|" * 15]
    for i, r in enumerate(results, 1):
        rows.append(
            f"| {i} | {r.jobs} | {r.events} ({r.events / r.window_s:.0f}/s) "
            f"| {r.delivered:,} / {r.expected:,} | {r.disconnects} ({r.disconnected}) "
            f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} | {r.first_p99_ms:.1f} "
            f"| {r.server_cpu:.0f} | {r.tree_cpu:.0f} | {r.rss_mb:.0f} | {r.client_cpu:.0f} "
            f"| {r.other_cpu:.0f} | {r.cpu_ms_per_event:.1f} |"
        )

    def col(name: str, fmt: str) -> str:
        return spread([float(getattr(r, name)) for r in results], fmt)

    per_event = spread([r.cpu_ms_per_event for r in results], ".1f")
    rows.append(
        f"| **median (min..max)** | {col('jobs', '.0f')} | {col('events', '.0f')} "
        f"| {col('delivered', ',.0f')} | {col('disconnects', '.0f')} "
        f"| {col('p50_ms', '.1f')} | {col('p99_ms', '.1f')} | {col('max_ms', '.1f')} "
        f"| {col('first_p99_ms', '.1f')} | {col('server_cpu', '.0f')} "
        f"| {col('tree_cpu', '.0f')} | {col('rss_mb', '.0f')} | {col('client_cpu', '.0f')} "
        f"| {col('other_cpu', '.0f')} | {per_event} |"
    )
    return rows


def comparison(results: list[RunResult], baseline: list[RunResult], source: Path) -> list[str]:
    """The baseline's table and the ratios of medians (runs alternated, same load)."""
    def med(rs: list[RunResult], f: str) -> float:
        return statistics.median(float(getattr(r, f)) for r in rs)

    cpu = statistics.median(r.cpu_ms_per_event for r in baseline) / statistics.median(
        r.cpu_ms_per_event for r in results)
    return [
        "",
        f"Side by side: the baseline served from `{source}`, its runs alternated with the runs "
        "above (baseline first), so both saw the same host load:",
        "",
        *table(baseline),
        "",
        f"- p99: {med(results, 'p99_ms'):.1f} ms against {med(baseline, 'p99_ms'):.1f} ms "
        f"({med(baseline, 'p99_ms') / med(results, 'p99_ms'):.2f}x lower); p50 "
        f"{med(results, 'p50_ms'):.1f} against {med(baseline, 'p50_ms'):.1f} ms.",
        f"- Server CPU per event (to every subscriber): {cpu:.2f}x less; events per second "
        f"{med(results, 'events') / med(results, 'window_s'):.0f} against "
        f"{med(baseline, 'events') / med(baseline, 'window_s'):.0f}.",
    ]


def report(args: argparse.Namespace, results: list[RunResult], loop_name: str,
           baseline: list[RunResult] | None = None) -> str:
    rows = table(results)
    if baseline:
        rows += comparison(results, baseline, args.compare)
    p99 = statistics.median(r.p99_ms for r in results)
    verdict = "met" if p99 <= TARGET_P99_MS else "**missed**"
    problems: list[str] = []
    for i, r in enumerate(results, 1):
        if r.errors:
            problems.append(f"run {i} client-side stream ends/errors: "
                            + ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items())))
        if r.log_issues:
            problems.append(f"run {i} server log: {len(r.log_issues)} warning/error line(s), "
                            f"first: `{r.log_issues[0][:200]}`")
    types: dict[str, int] = {}
    for r in results:
        for kind, count in r.types.items():
            types[kind] = types.get(kind, 0) + count
    jobs = sum(r.jobs for r in results) or 1
    per_job = ", ".join(f"{kind} {count / jobs:.1f}" for kind, count in sorted(types.items()))
    lines = [
        "# SSE fan-out benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores (client and server share them)",
        f"- Python {platform.python_version()} ({platform.platform()}); client event loop: "
        f"{loop_name}",
        f"- `python bench/bench_sse.py --subscribers {args.subscribers} --seconds {args.seconds}"
        f" --runs {args.runs}{f' --compare {args.compare}' if args.compare else ''}` "
        f"({args.events} progress calls per job, "
        f"`CONVEYOR_PROGRESS_INTERVAL_S={args.progress_interval}`)",
        "",
        f"Target: p99 delivery latency <= {TARGET_P99_MS:.0f} ms: {verdict} "
        f"(median p99 {p99:.1f} ms).",
        "",
        *rows,
        "",
        "How it is measured:",
        "",
        "- Each run starts a fresh `conveyor serve --workers 1` (SQLite, fresh temp data dir, "
        "`CONVEYOR_LOG_LEVEL=WARNING`, own process group, killed at the end).",
        f"- One client process opens {args.subscribers} `GET /v1/events` streams with raw "
        "`asyncio.open_connection` sockets (HTTP/1.1 and chunked/SSE framing parsed by hand) "
        "and waits until `/metrics` reports them all as `conveyor_event_subscribers`.",
        f"- Then, for {args.seconds} s, one `progress` job at a time is submitted "
        f"(`options={{\"events\": {args.events}}}`); the next one goes in as soon as a "
        "subscriber has seen the previous one's terminal event. *events* is the number of "
        "distinct events committed in the window (and their rate); *expected* is that times "
        "the number of subscribers. Events per job, by type: " + per_job + ". (The worker "
        "stores a progress call only if the previous one is older than the interval, and "
        "drops it otherwise, so a `progress` job that makes its calls back to back stores "
        "about two progress events, not one every 20 ms: the event rate is set by the job "
        "turnaround, not by the interval.)",
        "- Latency = client receive time (wall clock, taken once per socket read) minus the "
        "event's `at` (commit time, truncated to the millisecond, so up to +1 ms of bias), "
        "for every event at every subscriber. *first-sub p99* uses only the first subscriber "
        "to receive each event: commit -> tailer -> first socket, without the fan-out cost.",
        "- CPU % is CPU seconds / wall seconds over the job window (100 % = one core): "
        "*server* is the `conveyor serve` process alone (API, hub, all SSE streams), *tree* "
        "adds the worker process. RSS is the server process's `VmHWM` (kernel peak). *server "
        "CPU ms / event* is the server's CPU time over the window divided by the distinct "
        "events: the cost of one event delivered to every subscriber, which the host's other "
        "load changes little (unlike the latencies).",
        "- *client CPU %* is the benchmark client's own CPU time / wall time over the same "
        "window. With only "
        f"{os.cpu_count()} cores the client competes with the server for CPU: when server + "
        "client approach 100 % x cores, latencies include time the server spent waiting for a "
        "core, and the numbers are a pessimistic bound for a dedicated server.",
        "- *other CPU %* is the whole machine's busy CPU time over the window (all cores, "
        f"{100 * (os.cpu_count() or 1)} % max) minus the server tree and the client: "
        "unrelated load on the shared host. Runs with a high value are noisy.",
        "- Disconnects: a stream the server ends (e.g. a subscriber dropped for a full queue) "
        "is counted and reopened with `Last-Event-ID`.",
    ]
    if problems:
        lines += ["", "Problems seen:", "", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"


def show(i: int, r: RunResult) -> RunResult:
    print(f"  run {i}: {r.events} events, delivered {r.delivered}/{r.expected}, "
          f"disconnects {r.disconnects}, p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} "
          f"max {r.max_ms:.1f} ms, server CPU {r.server_cpu:.0f}% "
          f"(tree {r.tree_cpu:.0f}%), RSS {r.rss_mb:.0f} MB, client CPU "
          f"{r.client_cpu:.0f}%, other {r.other_cpu:.0f}%", flush=True)
    for line in r.log_issues[:20]:
        print(f"    server log: {line}")
    for what, count in sorted(r.errors.items()):
        print(f"    client: {what} x{count}")
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=200, help="progress calls per job")
    parser.add_argument("--progress-interval", type=float, default=0.02,
                        help="CONVEYOR_PROGRESS_INTERVAL_S for the server")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--compare", type=Path, default=None, metavar="SRC",
                        help="also run a baseline served from this src directory (e.g. "
                        "another checkout's src/), alternating runs with this tree's")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(8192, args.subscribers * 2 + 256)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it

    loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = f"uvloop {getattr(uvloop, '__version__', '')}".strip()
        except ImportError:
            pass

    results: list[RunResult] = []
    baseline: list[RunResult] = []
    for i in range(1, args.runs + 1):
        if args.compare:
            print(f"baseline (from {args.compare}):", flush=True)
            baseline.append(show(i, one_run(args, i, args.compare)))
        results.append(show(i, one_run(args, i)))
    text = report(args, results, loop_name, baseline)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
