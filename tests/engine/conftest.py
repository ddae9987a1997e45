"""Engine fixtures: a real database (SQLite file or PostgreSQL) and real worker subprocesses."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from ulid import ULID

from conveyor.runner.worker import PROCESS_NAME
from conveyor.settings import Settings
from conveyor.storage import BlockingStorage, from_url, input_key
from conveyor.store import NewJob, Store
from tests.conftest import base_env, need_service

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        need_service("PostgreSQL on 127.0.0.1:5432", str(exc).strip())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'conveyor.db'}"
        return
    admin = _pg_admin()
    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Engine:
    """A data dir + database, with helpers to add jobs and run `conveyor worker` subprocesses."""

    def __init__(self, data_dir: Path, db_url: str) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.env_overrides: dict[str, str] = {
            "CONVEYOR_DATABASE_URL": db_url,
            "CONVEYOR_LEASE_S": "3",
            "CONVEYOR_RETRY_BASE_S": "0.2",
            "CONVEYOR_RETRY_MAX_S": "1",
            "CONVEYOR_CANCEL_GRACE_S": "1",
            "CONVEYOR_SHUTDOWN_GRACE_S": "5",
        }
        self.settings = Settings(data_dir=data_dir, database_url=db_url)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(db_url, run_dir=self.settings.run_dir)
        self.store.migrate()
        self.storage = BlockingStorage(from_url(self.settings))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logfiles: list[Any] = []

    def add(self, pipeline: str, options: dict[str, Any] | None = None, *, data: bytes = b"x",
            priority: int = 0, max_attempts: int = 3, timeout_s: float = 60.0) -> str:
        job_id = str(ULID())
        self.storage.put_bytes(input_key(job_id), data)
        self.store.jobs.create(
            NewJob(
                id=job_id, pipeline=pipeline, options=options or {}, input_key=input_key(job_id),
                input_filename="input.bin", input_size=len(data),
                input_sha256=hashlib.sha256(data).hexdigest(), media_type="text/plain",
                priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            )
        )
        return job_id

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(self.data_dir, **{**self.env_overrides, **extra})

    def worker(self, *args: str, workers: int = 2, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"worker-{len(self.procs)}.log", "wb")
        self.logfiles.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "--workers", str(workers), *args],
            env=self.env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def burst(self, workers: int = 2, timeout: float = 90, **env: str) -> None:
        proc = self.worker("--burst", workers=workers, **env)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"burst worker did not drain the queue:\n{self.logs()}") from None
        assert proc.returncode == 0, self.logs()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.data_dir.glob("worker-*.log")))

    def wait(self, job_id: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
             timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.jobs.get(job_id)
            if job is not None and job.state.value in states:
                return job
            time.sleep(0.05)
        job = self.store.jobs.get(job_id)
        raise AssertionError(f"job {job_id} is {job.state if job else None}:\n{self.logs()}")

    def worker_pids(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """PIDs of the worker processes under a `conveyor worker` supervisor."""
        children = psutil.Process(proc.pid).children(recursive=True)
        return [c.pid for c in children if c.name() == PROCESS_NAME]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for log in self.logfiles:
            log.close()
        self.store.close()
        self.storage.close()


@pytest.fixture
def engine(tmp_path: Path, db_url: str) -> Iterator[Engine]:
    eng = Engine(tmp_path / "data", db_url)
    yield eng
    eng.close()


EngineFactory = Callable[..., Engine]
