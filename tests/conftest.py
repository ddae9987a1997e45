"""Fixtures shared by every test layer.

- ``CONVEYOR_*`` variables of the calling shell are removed, so tests see only what they set.
- :func:`need_service` skips a test when PostgreSQL, Redis, Chromium, a command (``openssl``) or
  a Python package (:func:`need_module`, e.g. PyAV) is missing, except under ``CI=true``, where
  a missing need is a failure.
- ``server`` starts a real ``conveyor serve`` subprocess on a free loopback port.
- ``tmpfs`` mounts small filesystems (root only) that :func:`fill` fills, for full-disk tests.
- ``moto`` is the session's S3 stand-in (:mod:`tests.objects`); fixtures parametrised over
  :data:`BACKENDS` get their server's environment from :func:`storage_env`, and
  :meth:`Server.stored` / :meth:`Server.unfinished` look at either backend's bytes.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import httpx
import pytest

from tests import objects

for _name in list(os.environ):
    if _name.startswith("CONVEYOR_"):
        del os.environ[_name]

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


def need_service(name: str, why: str) -> NoReturn:
    """Skip locally, fail on CI: a test that needs a missing service must not pass silently.

    Callable at module level too (a whole module that needs it is skipped, or fails to collect
    under CI, which fails the run).
    """
    message = f"{name} is not available: {why}"
    if CI:
        pytest.fail(message + " (CI=true: services must be running)")
    pytest.skip(message, allow_module_level=True)


def need_module(name: str, why: str) -> ModuleType:
    """Import an optional package, or :func:`need_service` it: ``pytest.importorskip`` for CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        need_service(f"the Python package {name!r}", f"{why} ({exc})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "CONVEYOR_DATA_DIR": str(data_dir),
            "CONVEYOR_PROCESSORS": "conveyor_testprocs",
            "CONVEYOR_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(
                [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    env.update(extra)
    return env


@dataclass
class Server:
    """A running ``conveyor serve`` subprocess."""

    data_dir: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        self.log_path = self.data_dir.parent / f"server-{self.port}-{time.time_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"conveyor serve exited:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"conveyor serve did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL the server and every process it started (its session)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def s3_prefix(self) -> str | None:
        return objects.bucket_prefix(self.env)

    def stored(self, under: str = "") -> dict[str, bytes]:
        """Every stored object whose key starts with ``under`` (``inputs/``...), with its bytes."""
        prefix = self.s3_prefix
        if prefix is not None:
            return objects.s3_keys(objects.RUNNING[0], prefix, under)
        root = self.data_dir / "files"
        return {key: p.read_bytes() for p in root.rglob("*") if p.is_file()
                and not (key := str(p.relative_to(root))).startswith("tmp/")
                and key.startswith(under)}

    def unfinished(self) -> list[str]:
        """Writes begun and not completed: temp files, or S3 multipart uploads."""
        prefix = self.s3_prefix
        if prefix is not None:
            return objects.s3_uploads(objects.RUNNING[0], prefix)
        tmp = self.data_dir / "files" / "tmp"
        return [p.name for p in tmp.iterdir()] if tmp.is_dir() else []

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_state(self, job_id: str, states: tuple[str, ...] = ("succeeded", "failed",
                   "cancelled"), timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        job: dict[str, object] = {}
        while time.monotonic() < deadline:
            job = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()
            if job.get("state") in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} stuck in {job.get('state')}: {job}")


def module_server(factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[Server]:
    """One server shared by a module's tests (each start costs seconds): yield from this."""
    folder = factory.mktemp(name) / "data"
    srv = Server(folder, base_env(folder, **{"CONVEYOR_WORKERS": "2", "CONVEYOR_LEASE_S": "5",
                                             **env}))
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make (and afterwards kill) ``conveyor serve`` subprocesses: ``server_factory(**env)``."""
    made: list[Server] = []

    def make(*args: str, data_dir: Path | None = None, start: bool = True,
             **env: str) -> Server:
        folder = data_dir or tmp_path / f"data{len(made)}"
        defaults = {"CONVEYOR_WORKERS": "2", "CONVEYOR_LEASE_S": "5"}
        srv = Server(folder, base_env(folder, **{**defaults, **env}), list(args))
        made.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in made:
        srv.kill()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


MiB = 1024 * 1024
#: ``tmpfs(name, megabytes)`` -> the mounted folder.
Mount = Callable[[str, int], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``tmpfs(name, megabytes)``: a small tmpfs under ``tmp_path``, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, megabytes: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                               str(folder)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            need_service("tmpfs mounts", f"`mount -t tmpfs` failed (root needed): "
                         f"{done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        # Lazy: the server may still hold files there while its fixture kills it.
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill ``folder``'s filesystem until ``leave`` bytes (about) are free; return the filler."""
    filler = folder / f"filler-{time.time_ns()}"
    with open(filler, "wb") as fh:
        try:
            while True:
                st = os.statvfs(folder)
                room = st.f_bavail * st.f_frsize - leave
                if room <= 0:
                    break
                fh.write(b"\0" * min(room, 4 * MiB))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


BACKENDS = ["local", "s3"]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[objects.Moto]:
    """moto's server mode on a free loopback port, with the test bucket (one per session)."""
    for name in ("moto.server", "boto3", "obstore"):
        need_module(name, "the S3 stand-in and client of the S3 storage tests")
    stand_in = objects.Moto(tmp_path_factory.mktemp("moto")).start()
    objects.RUNNING.append(stand_in)
    yield stand_in
    objects.RUNNING.remove(stand_in)
    stand_in.stop()


def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server environment for the backend a fixture is parametrised with (``BACKENDS``)."""
    if request.param == "local":
        return {}
    stand_in: objects.Moto = request.getfixturevalue("moto")
    return stand_in.env()


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """A test runs once per storage backend: pass this to ``server_factory(**backend_env)``."""
    return storage_env(request)
