"""The servers under test: how to start, probe, feed and stop each one.

A :class:`Target` is pluggable: a name, the commands that make up the server (each started in
its own process group), the upload route and form fields per job kind, and the status route.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
IMAGE_OPTIONS = {"sizes": [2048, 1024, 256], "format": "webp", "quality": 80}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Target:
    name: str
    #: Builds the commands from (port, private temp dir, run id).
    commands: Callable[[int, Path, str], list[Command]]
    upload_path: str
    status_path: str  # with "{id}"
    health_path: str = "/healthz"
    #: Form fields for a job kind: "image", "noop" or "probe".
    fields: Callable[[str], dict[str, str]] = lambda kind: {"pipeline": kind}
    #: The raw-body upload URL (path + query) for a job kind, if the target has one.
    raw_path: Callable[[str, str], str] | None = None
    #: The job kind for the 1 GB upload (the baselines' no-op; conveyor's ``probe``).
    big_kind: str = "noop"
    #: Called after the server stopped (e.g. to drop its Redis keys).
    on_stop: Callable[[Server], None] | None = None
    #: Pipelines the target offers, filled in after start (None: every kind works).
    pipelines: set[str] | None = None
    notes: list[str] = field(default_factory=list)

    def noop_kind(self) -> str:
        if self.pipelines is None or "noop" in self.pipelines:
            return "noop"
        return "probe"


def _uvicorn(app: str, port: int) -> list[str]:
    return [
        str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def bgtasks_target() -> Target:
    def commands(port: int, tmp: Path, run_id: str) -> list[Command]:
        env = {"BENCH_OUT_DIR": str(tmp / "out")}
        return [Command(_uvicorn("bench.baselines.bgtasks_app:app", port), env)]

    return Target("bgtasks", commands, "/upload", "/status/{id}")


def celery_target(redis_url: str) -> Target:
    def commands(port: int, tmp: Path, run_id: str) -> list[Command]:
        env = {
            "BENCH_OUT_DIR": str(tmp / "out"),
            "BENCH_REDIS_URL": redis_url,
            "BENCH_CELERY_QUEUE": f"bench-celery-{run_id}",
        }
        worker = [
            str(VENV_BIN / "celery"), "-A", "bench.baselines.celery_app", "worker",
            "--pool=prefork", "--concurrency=2", "--loglevel=WARNING",
            "--without-gossip", "--without-mingle", "-n", f"bench-{run_id}@%h",
        ]  # fmt: skip
        return [
            Command(_uvicorn("bench.baselines.celery_app:api", port), env),
            Command(worker, env),
        ]

    def drop_keys(server: Server) -> None:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"*bench-celery-{server.run_id}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    return Target("celery", commands, "/upload", "/status/{id}", on_stop=drop_keys)


def conveyor_target(binary: str, extra_env: dict[str, str]) -> Target:
    def commands(port: int, tmp: Path, run_id: str) -> list[Command]:
        env = {"CONVEYOR_DATA_DIR": str(tmp / "data"), **extra_env}
        argv = [binary, "serve", "--host", "127.0.0.1", "--port", str(port)]
        return [Command(argv, env)]

    def fields(kind: str) -> dict[str, str]:
        if kind == "image":
            return {"pipeline": "image", "options": json.dumps(IMAGE_OPTIONS)}
        return {"pipeline": kind}

    def raw_path(kind: str, filename: str) -> str:
        return f"/v1/jobs?pipeline={kind}&filename={filename}"

    return Target(
        "conveyor",
        commands,
        "/v1/jobs",
        "/v1/jobs/{id}",
        fields=fields,
        raw_path=raw_path,
        big_kind="probe",
    )


def conveyor_celery_target(binary: str, broker_url: str, pg_url: str) -> Target:
    """conveyor scaled out: ``conveyor serve`` publishing to a broker, one ``conveyor worker``
    Celery node (prefork, 2 processes), a fresh PostgreSQL database per start."""

    def db_name(run_id: str) -> str:
        return "conveyor_bench_" + "".join(c if c.isalnum() else "_" for c in run_id)

    def commands(port: int, tmp: Path, run_id: str) -> list[Command]:
        import psycopg

        with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name(run_id)}"')
        env = {
            "CONVEYOR_DATABASE_URL": f"{pg_url}/{db_name(run_id)}",
            "CONVEYOR_BROKER_URL": broker_url,
            "CONVEYOR_STORAGE_URL": f"file://{tmp / 'files'}",
            "CONVEYOR_SHARED_FILESYSTEM": "true",
            "CONVEYOR_LOG_LEVEL": "WARNING",
        }
        serve = [binary, "serve", "--host", "127.0.0.1", "--port", str(port)]
        worker = [binary, "worker", "--concurrency", "2"]
        return [Command(serve, {**env, "CONVEYOR_DATA_DIR": str(tmp / "api")}),
                Command(worker, {**env, "CONVEYOR_DATA_DIR": str(tmp / "node")})]

    def drop(server: Server) -> None:
        import psycopg

        with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name(server.run_id)}" WITH (FORCE)')
        if broker_url.startswith("redis://"):
            import redis

            client = redis.Redis.from_url(broker_url)
            try:
                client.flushdb()  # the bench's own database number: leftovers of this run
            finally:
                client.close()

    base = conveyor_target(binary, {})
    return Target("conveyor-celery", commands, base.upload_path, base.status_path,
                  fields=base.fields, raw_path=base.raw_path, big_kind=base.big_kind,
                  on_stop=drop)


class Server:
    """A started target: its process groups, its base URL, and its private temp dir."""

    def __init__(self, target: Target, workdir: Path, run_id: str) -> None:
        self.target = target
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=workdir))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.run_id = f"{run_id}-{uuid.uuid4().hex[:6]}"

    def start(self) -> None:
        # The caller's PYTHONPATH stays (e.g. a worktree's src/ ahead of the installed copy).
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env_base = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        for i, cmd in enumerate(self.target.commands(self.port, self.tmp, self.run_id)):
            log = self.tmp / f"proc{i}.log"
            self.logs.append(log)
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        cmd.argv,
                        cwd=REPO,
                        env={**env_base, **cmd.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # own process group, killed as a whole
                    )
                )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.target.name}: exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.base_url + self.target.health_path).status_code == 200:
                        return
                time.sleep(0.2)
        raise TimeoutError(f"{self.target.name}: not healthy after {timeout:.0f} s")

    def discover_pipelines(self) -> None:
        if not self.target.name.startswith("conveyor"):
            return
        resp = httpx.get(self.base_url + "/v1/pipelines", timeout=10)
        resp.raise_for_status()
        self.target.pipelines = {p["name"] for p in resp.json()}

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, grace: float = 10.0) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            # The group may outlive its leader (e.g. prefork children): kill it regardless.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def running(target: Target, workdir: Path, run_id: str) -> Iterator[Server]:
    server = Server(target, workdir, run_id)
    try:
        server.start()
        server.wait_healthy()
        server.discover_pipelines()
        yield server
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        if target.on_stop is not None:
            try:
                target.on_stop(server)
            except Exception as exc:
                print(f"{target.name}: cleanup failed: {exc!r}", file=sys.stderr)
        server.cleanup()


def tree(pids: list[int]) -> list[psutil.Process]:
    """The given processes and all their descendants, each once."""
    out: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            out.update((p.pid, p) for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            continue
    return list(out.values())


def tree_rss(pids: list[int]) -> int:
    """Sum of RSS over the given processes and all their descendants."""
    total = 0
    for proc in tree(pids):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def reset_peak_rss(pids: list[int]) -> None:
    """Resets each process's kernel peak RSS (VmHWM) to its current RSS (Linux only)."""
    for proc in tree(pids):
        with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/clear_refs", "w") as f:
            f.write("5")


def tree_peak_rss(pids: list[int]) -> int:
    """Sum of the kernel's per-process peak RSS (VmHWM): an upper bound on the tree's peak."""
    total = 0
    for proc in tree(pids):
        with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class RssSampler:
    """Samples the server tree's RSS every ``interval`` s in a thread; keeps the first and peak."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.first = tree_rss(pids)
        self.peak = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.pids))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, tree_rss(self.pids))
