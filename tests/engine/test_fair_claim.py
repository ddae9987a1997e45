"""Fair scheduling and max_running in the claim, on real SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text
from ulid import ULID

from conveyor.errors import QuotaExceeded, UploadOverQuota
from conveyor.models import JobState
from conveyor.quotas.policy import utc_day
from conveyor.storage import input_key
from conveyor.store import NewJob
from conveyor.store.attempts import DEFER_S
from tests.engine.conftest import Engine


def add(engine: Engine, tenant: str, *, priority: int = 0, data: bytes = b"x") -> str:
    job_id = str(ULID())
    engine.store.jobs.create(NewJob(
        id=job_id, pipeline="noop", options={}, input_key=input_key(job_id),
        input_filename="in.bin", input_size=len(data),
        input_sha256=hashlib.sha256(data).hexdigest(), media_type="text/plain",
        priority=priority, tenant_id=tenant))
    return job_id


def set_quota(engine: Engine, tenant: str, **quotas: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in quotas)
    with engine.store.db.tx() as tx:
        tx.execute(text("INSERT INTO tenants (id, created_at, last_claimed_at) "
                        "VALUES (:t, 0, 0) ON CONFLICT (id) DO NOTHING"), {"t": tenant})
        tx.execute(text(f"UPDATE tenants SET {sets} WHERE id = :t"), {**quotas, "t": tenant})


def claim_tenants(engine: Engine, n: int) -> list[str]:
    owners = []
    for _ in range(n):
        claim = engine.store.attempts.claim_next("w", 30)
        assert claim is not None
        with engine.store.db.reader.connect() as conn:
            owners.append(conn.execute(text("SELECT tenant_id FROM jobs WHERE id = :id"),
                                       {"id": claim.job.id}).scalar_one())
    return owners


def test_claims_round_robin_across_tenants(engine: Engine) -> None:
    for _ in range(5):
        add(engine, "a")
    for _ in range(2):
        add(engine, "b")
    add(engine, "c")
    # Never-claimed tenants first (by id), then the one claimed longest ago.
    assert claim_tenants(engine, 8) == ["a", "b", "c", "a", "b", "a", "a", "a"]
    assert engine.store.attempts.claim_next("w", 30) is None


def test_a_backlog_does_not_delay_another_tenants_job(engine: Engine) -> None:
    for _ in range(50):
        add(engine, "big")
    assert claim_tenants(engine, 3) == ["big", "big", "big"]
    late = add(engine, "small")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None and claim.job.id == late


def test_priority_then_age_within_a_tenant(engine: Engine) -> None:
    old = add(engine, "a")
    new = add(engine, "a")
    urgent = add(engine, "a", priority=5)
    claims = [engine.store.attempts.claim_next("w", 30) for _ in range(3)]
    assert [c.job.id for c in claims if c] == [urgent, old, new]


def test_max_running_skips_the_tenant_and_its_jobs_stay_queued(engine: Engine) -> None:
    set_quota(engine, "a", max_running=1)
    a1, a2 = add(engine, "a"), add(engine, "a")
    b1 = add(engine, "b")
    first = engine.store.attempts.claim_next("w", 30)
    assert first is not None and first.job.id == a1
    second = engine.store.attempts.claim_next("w", 30)
    assert second is not None and second.job.id == b1
    assert engine.store.attempts.claim_next("w", 30) is None
    job = engine.store.jobs.get(a2)
    assert job is not None and job.state is JobState.QUEUED
    # The running job ends: the tenant has room again.
    engine.store.attempts.complete(a1, first.token, {})
    third = engine.store.attempts.claim_next("w", 30)
    assert third is not None and third.job.id == a2


def test_raised_max_running_applies_to_the_next_claim(engine: Engine) -> None:
    set_quota(engine, "a", max_running=1)
    add(engine, "a")
    add(engine, "a")
    assert engine.store.attempts.claim_next("w", 30) is not None
    assert engine.store.attempts.claim_next("w", 30) is None
    set_quota(engine, "a", max_running=2)
    assert engine.store.attempts.claim_next("w", 30) is not None


def test_claim_of_one_id_honours_max_running_and_defers_the_job(engine: Engine) -> None:
    set_quota(engine, "a", max_running=1)
    a1, a2 = add(engine, "a"), add(engine, "a")
    assert engine.store.attempts.claim(a1, "w", 30) is not None
    before = time.time()
    assert engine.store.attempts.claim(a2, "w", 30) is None
    job = engine.store.jobs.get(a2)
    assert job is not None and job.state is JobState.QUEUED
    # Due again a moment later, so the reconciler sends its message again.
    assert job.run_after >= before + DEFER_S * 0.9


def test_claim_moves_the_tenants_last_claimed_at(engine: Engine) -> None:
    a = add(engine, "a")
    before = time.time()
    assert engine.store.attempts.claim(a, "w", 30) is not None
    add(engine, "a")
    assert engine.store.attempts.claim_next("w", 30) is not None
    with engine.store.db.reader.connect() as conn:
        at = conn.execute(text("SELECT last_claimed_at FROM tenants WHERE id = 'a'")).scalar()
    assert at is not None and at >= before


def test_child_jobs_belong_to_the_parents_tenant(engine: Engine) -> None:
    parent = add(engine, "a")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    child_id = str(ULID())
    child = NewJob(id=child_id, pipeline="noop", options={}, input_key=input_key(child_id),
                   input_filename="c", input_size=1, input_sha256="0" * 64,
                   media_type="text/plain", parent_id=parent)
    engine.store.attempts.complete(parent, claim.token, {}, children=[child])
    with engine.store.db.reader.connect() as conn:
        owner = conn.execute(text("SELECT tenant_id FROM jobs WHERE id = :id"),
                             {"id": child_id}).scalar()
    assert owner == "a"


# -- the upload quotas in the job's insert transaction -------------------------------------


def test_max_queued_refuses_the_job_past_the_limit(engine: Engine) -> None:
    set_quota(engine, "a", max_queued=2)
    add(engine, "a")
    add(engine, "a")
    with pytest.raises(QuotaExceeded) as err:
        add(engine, "a")
    assert err.value.limit.policy == "max_queued" and err.value.limit.remaining == 0
    add(engine, "b")  # another tenant is not limited
    with engine.store.db.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE tenant_id = 'a'")).scalar() == 2


def test_byte_quotas_count_and_refuse(engine: Engine) -> None:
    set_quota(engine, "a", bytes_per_day=10, max_upload_bytes=8)
    add(engine, "a", data=b"12345")
    with pytest.raises(UploadOverQuota):
        add(engine, "a", data=b"123456789")
    with pytest.raises(QuotaExceeded) as err:
        add(engine, "a", data=b"123456")
    assert err.value.limit.policy == "bytes_per_day"
    add(engine, "a", data=b"12345")
    with engine.store.db.reader.connect() as conn:
        used = conn.execute(text("SELECT bytes FROM tenant_usage WHERE tenant_id = 'a' "
                                 "AND day = :d"), {"d": utc_day(time.time())}).scalar()
    assert used == 10
    usage = engine.store.quotas.usage("a")
    assert usage.bytes_today == 10 and usage.queued == 2 and usage.storage_bytes == 10


def test_storage_quota_frees_with_deleted_jobs(engine: Engine) -> None:
    set_quota(engine, "a", storage_bytes=10)
    first = add(engine, "a", data=b"1234567890")
    with pytest.raises(QuotaExceeded) as err:
        add(engine, "a", data=b"1")
    assert err.value.limit.policy == "storage_bytes"
    engine.store.jobs.delete(first)
    add(engine, "a", data=b"1")


def test_concurrent_claims_never_pass_max_running(engine: Engine) -> None:
    set_quota(engine, "a", max_running=2)
    for _ in range(20):
        add(engine, "a")
    b = add(engine, "b")
    gate = threading.Barrier(10)

    def claim(i: int) -> str | None:
        gate.wait()
        got = engine.store.attempts.claim_next(f"w{i}", 30)
        return got.job.id if got else None

    with ThreadPoolExecutor(10) as pool:
        claimed = [c for c in pool.map(claim, range(10)) if c is not None]
    assert b in claimed
    with engine.store.db.reader.connect() as conn:
        running = conn.execute(text("SELECT count(*) FROM jobs WHERE tenant_id = 'a' "
                                    "AND state = 'running'")).scalar()
    assert running == 2 and len(claimed) == 3
