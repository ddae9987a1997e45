"""The five workloads. Each takes a started server and returns its figures for one run."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.inputs import Inputs, MiB
from bench.targets import TERMINAL, RssSampler, Server, reset_peak_rss, tree_peak_rss, tree_rss

Metrics = dict[str, float]


@dataclass(frozen=True, slots=True)
class Config:
    img_rate: float = 4.0
    img_seconds: float = 10.0
    batch: int = 40
    noop_jobs: int = 2000
    noop_concurrency: int = 16
    burst: int = 200
    job_timeout: float = 600.0  # per workload, waiting for all jobs to end
    request_timeout: float = 300.0

    @classmethod
    def quick(cls) -> Config:
        return cls(img_seconds=2.0, batch=8, noop_jobs=200, burst=100, job_timeout=180.0)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Unused (plain HTTP), but httpx builds one per client otherwise: ~50 ms of CPU each.
    return ssl.create_default_context()


def client(cfg: Config) -> httpx.AsyncClient:
    # No pool limit: an open-loop client must never queue requests on its own side.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    return httpx.AsyncClient(limits=limits, timeout=cfg.request_timeout, verify=_ssl_context())


class Clients:
    """Several small httpx clients used round-robin.

    One httpcore pool gets slow with many concurrent connections (its request-to-connection
    assignment is quadratic): at 16 concurrent tiny uploads it managed fewer requests/s than at
    concurrency 1. Small pools keep the client's own overhead out of the figures.
    """

    def __init__(self, cfg: Config, count: int = 32) -> None:
        self.all = [client(cfg) for _ in range(count)]
        self._next = 0

    def next(self) -> httpx.AsyncClient:
        self._next = (self._next + 1) % len(self.all)
        return self.all[self._next]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self.all:
            await http.aclose()


@dataclass
class Submitted:
    latency: float
    job_id: str | None
    error: str | None


async def submit(
    http: httpx.AsyncClient,
    server: Server,
    kind: str,
    filename: str,
    data: bytes,
    started: float | None = None,
) -> Submitted:
    """One multipart upload; latency is measured from ``started`` (the scheduled send time)."""
    t0 = time.monotonic() if started is None else started
    try:
        resp = await http.post(
            server.base_url + server.target.upload_path,
            data=server.target.fields(kind),
            files={"file": (filename, data, "application/octet-stream")},
        )
    except httpx.HTTPError as exc:
        return Submitted(time.monotonic() - t0, None, type(exc).__name__)
    latency = time.monotonic() - t0
    if not resp.is_success:
        return Submitted(latency, None, f"HTTP {resp.status_code}: {resp.text[:200]}")
    return Submitted(latency, str(resp.json()["id"]), None)


@dataclass
class Waited:
    done_at: float = float("nan")  # monotonic time the last job was seen ending
    failed: int = 0
    unfinished: int = 0


async def job_state(http: httpx.AsyncClient, server: Server, job_id: str) -> str | None:
    try:
        resp = await http.get(server.base_url + server.target.status_path.format(id=job_id))
    except httpx.HTTPError:
        return None
    return str(resp.json().get("state")) if resp.status_code == 200 else None


async def wait_jobs(
    http: httpx.AsyncClient,
    server: Server,
    ids: asyncio.Queue[str | None],
    deadline: float,
    interval: float = 0.05,
) -> Waited:
    """Polls jobs in submission order (they end roughly in order): one GET per job plus one
    per ``interval`` while the oldest pending job runs. ``None`` on the queue ends the stream."""
    out = Waited()
    while True:
        job_id = await ids.get()
        if job_id is None:
            return out
        while True:
            if time.monotonic() > deadline:
                out.unfinished += 1 + ids.qsize()
                return out
            state = await job_state(http, server, job_id)
            if state in TERMINAL:
                out.failed += state != "succeeded"
                out.done_at = time.monotonic()
                break
            await asyncio.sleep(interval)


def queue_of(ids: list[str]) -> asyncio.Queue[str | None]:
    """A closed stream of job ids for :func:`wait_jobs`."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for job_id in [*ids, None]:
        queue.put_nowait(job_id)
    return queue


def errors_of(subs: list[Submitted]) -> tuple[int, list[str]]:
    errs = [s.error for s in subs if s.error]
    return len(errs), sorted(set(errs))[:3]


async def w_img(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    """Open loop: request i starts at t0 + i/rate on its own task, whatever came before."""
    photo = inputs.photo.read_bytes()
    count = round(cfg.img_rate * cfg.img_seconds)
    async with Clients(cfg) as pool:
        with RssSampler(server.pids()) as rss:
            t0 = time.monotonic() + 0.2

            async def one(i: int) -> Submitted:
                scheduled = t0 + i / cfg.img_rate
                await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                http = pool.next()
                return await submit(http, server, "image", f"photo{i}.jpg", photo, scheduled)

            subs = await asyncio.gather(*(one(i) for i in range(count)))
            ids = [s.job_id for s in subs if s.job_id]
            deadline = t0 + cfg.job_timeout
            waited = await wait_jobs(pool.all[0], server, queue_of(ids), deadline, 0.2)
    lat = [s.latency * 1000 for s in subs if s.error is None]
    n_err, notes = errors_of(subs)
    return {
        "accept_p50_ms": percentile(lat, 50),
        "accept_p99_ms": percentile(lat, 99),
        "accept_max_ms": max(lat, default=float("nan")),
        "peak_rss_mb": rss.peak / 1e6,
        "all_done_s": waited.done_at - t0,
        "errors": n_err + waited.failed + waited.unfinished,
    }, notes


async def w_img_batch(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    photo = inputs.photo.read_bytes()
    async with Clients(cfg) as pool:
        t0 = time.monotonic()
        subs = await asyncio.gather(
            *(
                submit(pool.next(), server, "image", f"photo{i}.jpg", photo)
                for i in range(cfg.batch)
            )
        )
        ids = [s.job_id for s in subs if s.job_id]
        waited = await wait_jobs(pool.all[0], server, queue_of(ids), t0 + cfg.job_timeout)
    n_err, notes = errors_of(subs)
    return {
        "all_done_s": waited.done_at - t0,
        "errors": n_err + waited.failed + waited.unfinished,
    }, notes


async def w_noop(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    """Closed loop with bounded concurrency; completions are polled while submitting."""
    data = inputs.tiny.read_bytes()
    kind = server.target.noop_kind()
    notes = [] if kind == "noop" else ["no `noop` pipeline: used `probe` on a tiny file"]
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    async with Clients(cfg, cfg.noop_concurrency + 1) as pool:
        t0 = time.monotonic()
        waiter = asyncio.create_task(wait_jobs(pool.all[-1], server, queue, t0 + cfg.job_timeout))
        next_index = 0
        lock = asyncio.Lock()

        async def worker(http: httpx.AsyncClient) -> list[Submitted]:
            nonlocal next_index
            out: list[Submitted] = []
            while True:
                async with lock:
                    if next_index >= cfg.noop_jobs:
                        return out
                    i = next_index
                    next_index += 1
                sub = await submit(http, server, kind, f"tiny{i}.txt", data)
                out.append(sub)
                if sub.job_id:
                    queue.put_nowait(sub.job_id)

        chunks = await asyncio.gather(*(worker(http) for http in pool.all[:-1]))
        queue.put_nowait(None)
        waited = await waiter
    subs = [s for chunk in chunks for s in chunk]
    n_err, errs = errors_of(subs)
    done = sum(1 for s in subs if s.job_id) - waited.failed - waited.unfinished
    return {
        "jobs_per_s": done / (waited.done_at - t0),
        "errors": n_err + waited.failed + waited.unfinished,
    }, notes + errs


async def w_burst(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    data = inputs.small.read_bytes()
    kind = server.target.noop_kind()
    async with Clients(cfg) as pool:
        t0 = time.monotonic()
        subs = await asyncio.gather(
            *(submit(pool.next(), server, kind, f"small{i}.bin", data) for i in range(cfg.burst))
        )
        ids = [s.job_id for s in subs if s.job_id]
        waited = await wait_jobs(pool.all[0], server, queue_of(ids), t0 + cfg.job_timeout)
    lat = [s.latency * 1000 for s in subs if s.error is None]
    n_err, notes = errors_of(subs)
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat, default=float("nan")),
        "errors": n_err,
        "jobs_failed": waited.failed + waited.unfinished,
    }, notes


async def file_chunks(path: Path, head: bytes = b"", tail: bytes = b"") -> AsyncIterator[bytes]:
    """Streams the file from disk in 1 MiB reads: the client never holds it whole."""
    yield head
    with path.open("rb") as src:
        while chunk := src.read(MiB):
            yield chunk
    yield tail


def multipart_head(boundary: str, fields: dict[str, str], filename: str) -> bytes:
    """Everything before the file bytes: the text fields, then the ``file`` part's headers."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode()


async def _big(server: Server, inputs: Inputs, cfg: Config, raw: bool) -> tuple[Metrics, list[str]]:
    path = inputs.big
    size = path.stat().st_size
    target = server.target
    kind = target.big_kind
    if raw:
        assert target.raw_path is not None
        url = server.base_url + target.raw_path(kind, "big.bin")
        body = file_chunks(path)
        headers = {"content-type": "application/octet-stream", "content-length": str(size)}
    else:
        url = server.base_url + target.upload_path
        boundary = uuid.uuid4().hex
        head = multipart_head(boundary, target.fields(kind), "big.bin")
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = file_chunks(path, head, tail)
        headers = {
            "content-type": f"multipart/form-data; boundary={boundary}",
            "content-length": str(len(head) + size + len(tail)),
        }
    async with client(cfg) as http:
        before = tree_rss(server.pids())
        reset_peak_rss(server.pids())
        # 10 ms samples: a whole-body read lives only briefly after the upload ends.
        with RssSampler(server.pids(), interval=0.01) as rss:
            t0 = time.monotonic()
            try:
                resp = await http.post(url, content=body, headers=headers)
                error = None if resp.is_success else f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            elapsed = time.monotonic() - t0
            waited = Waited()
            if error is None:
                job_id = str(resp.json()["id"])
                waited = await wait_jobs(http, server, queue_of([job_id]), t0 + cfg.job_timeout)
    # The kernel's per-process high-water marks (reset above) catch what sampling misses.
    peak = max(rss.peak, tree_peak_rss(server.pids()))
    return {
        "mb_per_s": size / 1e6 / elapsed if error is None else float("nan"),
        "rss_growth_mb": (peak - before) / 1e6,
        "rss_growth_sampled_mb": (rss.peak - before) / 1e6,
        "errors": (error is not None) + waited.failed + waited.unfinished,
    }, [error] if error else []


async def w_big(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    return await _big(server, inputs, cfg, raw=False)


async def w_big_raw(server: Server, inputs: Inputs, cfg: Config) -> tuple[Metrics, list[str]]:
    return await _big(server, inputs, cfg, raw=True)


Workload = Callable[[Server, Inputs, Config], Coroutine[Any, Any, tuple[Metrics, list[str]]]]

WORKLOADS: dict[str, Workload] = {
    "W-img": w_img,
    "W-img-batch": w_img_batch,
    "W-big": w_big,
    "W-big-raw": w_big_raw,
    "W-noop": w_noop,
    "W-burst": w_burst,
}


async def warm_up(server: Server, inputs: Inputs, timeout: float = 90.0) -> None:
    """One no-op job end to end: the HTTP side and the workers are both up."""
    async with client(Config(request_timeout=30)) as http:
        sub = await submit(http, server, server.target.noop_kind(), "warmup.txt", b"warm-up\n")
        if sub.error or sub.job_id is None:
            raise RuntimeError(f"{server.target.name}: warm-up upload failed: {sub.error}")
        waited = await wait_jobs(
            http, server, queue_of([sub.job_id]), time.monotonic() + timeout, 0.1
        )
        if waited.unfinished or waited.failed:
            raise RuntimeError(f"{server.target.name}: warm-up job did not succeed")
