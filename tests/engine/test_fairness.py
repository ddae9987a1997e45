"""Fairness with real workers: one tenant's backlog does not starve another tenant's job."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import text
from ulid import ULID

from conveyor.storage import input_key
from conveyor.store import NewJob
from tests.engine.conftest import Engine

SLOTS = 2


def add(engine: Engine, tenant: str, seconds: float) -> str:
    job_id = str(ULID())
    data = b"x"
    engine.storage.put_bytes(input_key(job_id), data)
    engine.store.jobs.create(NewJob(
        id=job_id, pipeline="sleep", options={"seconds": seconds, "steps": 1},
        input_key=input_key(job_id), input_filename="in.bin", input_size=1,
        input_sha256=hashlib.sha256(data).hexdigest(), media_type="text/plain",
        tenant_id=tenant))
    return job_id


def started_count(engine: Engine, tenant: str) -> int:
    with engine.store.db.reader.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE tenant_id = :t "
                                     "AND started_at IS NOT NULL"), {"t": tenant}).scalar_one())


def test_one_job_of_tenant_b_starts_before_tenant_as_backlog_drains(engine: Engine) -> None:
    for _ in range(300):
        add(engine, "a", 0.3)
    engine.worker(workers=SLOTS)
    deadline = time.monotonic() + 60
    while started_count(engine, "a") < SLOTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started_count(engine, "a") >= SLOTS, engine.logs()
    before = started_count(engine, "a")
    b = add(engine, "b", 0.0)
    job = engine.wait(b, states=("running", "succeeded"), timeout=60)
    after = started_count(engine, "a")
    # B waited at most for the jobs already running: no more than one of A's jobs per worker
    # slot started meanwhile, while 300 were queued ahead of it.
    assert after - before <= SLOTS, (before, after)
    assert after < 300
    assert job.started_at is not None
