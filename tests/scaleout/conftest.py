"""Scale-out fixtures: a real broker (a private Redis, or a private vhost of the machine's
RabbitMQ behind a TCP proxy we can cut), a fresh PostgreSQL database, one shared storage
directory (declared shared), a ``conveyor serve`` and ``conveyor worker`` Celery nodes.

The broker "outage" never touches the machine's shared services: Redis is a ``redis-server`` of
the test's own (append-only file, so a restart keeps its messages, as a production broker
must); RabbitMQ is reached through a ``socat`` proxy that the test stops and starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import Client
from tests.conftest import Server, base_env, free_port, need_service
from tests.engine.conftest import _pg_admin
from tests.scaleout.machines import Machine


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, up: bool = True, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port) == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'}")


class Broker:
    """A broker the test may stop (an outage) and start again."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.vhost = ""
        if kind == "redis":
            if shutil.which("redis-server") is None:
                need_service("redis-server", "the Redis broker tests start their own")
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            if not _port_open(5672) or shutil.which("socat") is None:
                need_service("RabbitMQ on 127.0.0.1:5672 (and socat)",
                             "the RabbitMQ broker tests use a private vhost behind a proxy")
            self.vhost = f"conveyor_test_{uuid.uuid4().hex[:10]}"
            self._ctl("add_vhost", self.vhost)
            self._ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/{self.vhost}"
        self.start()

    @staticmethod
    def _ctl(*args: str) -> None:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)
        if done.returncode != 0:
            need_service("rabbitmqctl", done.stderr.decode(errors="replace").strip())

    def start(self) -> None:
        if self.kind == "redis":
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
                   "--appendfsync", "always"]
        else:
            cmd = ["socat", f"TCP-LISTEN:{self.port},fork,reuseaddr,bind=127.0.0.1",
                   "TCP:127.0.0.1:5672"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _wait_port(self.port)

    def stop(self) -> None:
        """An outage: every connection drops, nothing answers on the port."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM if self.kind == "redis" else signal.SIGKILL)
            self.proc.wait(20)
        _wait_port(self.port, up=False)

    def close(self) -> None:
        self.stop()
        if self.vhost:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost],
                           capture_output=True, timeout=60)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    b = Broker(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin = _pg_admin()
    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Cluster:
    """One API server and any number of Celery worker nodes, sharing a storage directory."""

    def __init__(self, root: Path, broker: Broker, db_url: str) -> None:
        self.root = root
        self.broker = broker
        self.db_url = db_url
        self.shared = root / "shared"
        self.shared.mkdir(parents=True)
        self.common = {
            "CONVEYOR_DATABASE_URL": db_url,
            "CONVEYOR_BROKER_URL": broker.url,
            "CONVEYOR_STORAGE_URL": f"file://{self.shared}",
            "CONVEYOR_SHARED_FILESYSTEM": "true",
            "CONVEYOR_LEASE_S": "3",
            "CONVEYOR_RETRY_BASE_S": "0.2",
            "CONVEYOR_RETRY_MAX_S": "1",
            "CONVEYOR_CANCEL_GRACE_S": "1",
            "CONVEYOR_SHUTDOWN_GRACE_S": "5",
            "CONVEYOR_WORKER_NICE": "0",
        }
        self.server: Server | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.clients: list[Client] = []
        self.machines: dict[str, Machine] = {}

    def serve(self, **env: str) -> Server:
        data = self.root / "api"
        self.server = Server(data, base_env(data, **{**self.common, **env})).start()
        return self.server

    def worker(self, concurrency: int = 2, *args: str, wait: bool = True,
               machine: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """A ``conveyor worker`` node: a process group here, or with ``machine`` the process
        tree of a namespace "machine" of that name (see machines.py)."""
        data = self.root / (machine or f"node{len(self.nodes)}")
        data.mkdir(parents=True, exist_ok=True)
        log = data / "worker.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "conveyor", "worker", "--concurrency", str(concurrency),
                *args]
        full_env = base_env(data, **{**self.common, "CONVEYOR_LOG_LEVEL": "INFO", **env})
        if machine is not None:
            box = Machine(machine, self.root, [5432, self.broker.port])
            self.machines[machine] = box
            proc = box.run(argv, full_env, log)
        else:
            with open(log, "wb") as out:
                proc = subprocess.Popen(argv, env=full_env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(proc)
        if wait:
            self.wait_nodes(sum(1 for p in self.nodes if p.poll() is None))
        return proc

    def client(self) -> Client:
        """An API client, closed with the cluster."""
        assert self.server is not None
        made = Client(self.server.url)
        self.clients.append(made)
        return made

    def wait_nodes(self, count: int, timeout: float = 30) -> dict[str, Any]:
        """Until /readyz counts ``count`` live worker nodes (their heartbeat rows)."""
        assert self.server is not None
        deadline = time.monotonic() + timeout
        checks: dict[str, Any] = {}
        while time.monotonic() < deadline:
            checks = httpx.get(self.server.url + "/readyz", timeout=10).json()["checks"]
            if checks.get("workers") == count:
                return checks
            time.sleep(0.1)
        raise AssertionError(f"expected {count} worker nodes, /readyz says {checks}\n"
                             + self.node_logs())

    def node_logs(self) -> str:
        return "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-4000:]
                         for p in self.logs if p.exists())

    def kill_node(self, proc: subprocess.Popen[bytes]) -> None:
        """A machine lost: SIGKILL the node's whole process group."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for made in self.clients:
            made.close()
        for box in self.machines.values():
            box.close()
        for proc in self.nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self.server is not None:
            self.server.kill()


@pytest.fixture
def cluster(tmp_path: Path, broker: Broker, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", broker, pg_url)
    yield c
    c.close()
