"""Group commit: many new jobs in one transaction, each member with its own outcome."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from ulid import ULID

from conveyor.errors import InsufficientStorage, LeaseLost
from conveyor.models import JobState
from conveyor.store import Job, NewJob
from conveyor.store.group_commit import GroupCommit
from conveyor.store.tables import events, jobs
from tests.engine.conftest import Engine


def _new(key: str | None = None) -> NewJob:
    job_id = str(ULID())
    return NewJob(id=job_id, pipeline="noop", options={}, input_key=f"inputs/{job_id}",
                  input_filename="x", input_size=1, input_sha256=hashlib.sha256(b"x").hexdigest(),
                  media_type="text/plain", idempotency_key=key)


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.store.db.reader.connect() as conn:
        n_jobs = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
        n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
    return int(n_jobs), int(n_events)


def test_a_batch_commits_every_row_with_its_queued_event(engine: Engine) -> None:
    batch = [(_new(), f"req-{i}") for i in range(20)]
    results = engine.store.jobs.create_many(batch)
    assert [r[0].id for r in results if isinstance(r, tuple)] == [n.id for n, _ in batch]
    assert all(isinstance(r, tuple) and r[1] for r in results)
    assert _counts(engine) == (20, 20)
    # Each queued event names the request of its own member, not the batch's first.
    first = engine.store.events.after(0, job_id=batch[7][0].id)
    assert first[0].type == "job.queued" and first[0].data["request_id"] == "req-7"


def test_a_taken_idempotency_key_fails_only_its_member(engine: Engine) -> None:
    earlier, created = engine.store.jobs.create(_new("key-1"))
    assert created
    batch = [(_new(), None), (_new("key-1"), None), (_new("key-2"), None), (_new("key-2"), None)]
    results = engine.store.jobs.create_many(batch)
    outcomes = [(r[0].id, r[1]) for r in results if isinstance(r, tuple)]
    assert len(outcomes) == 4
    assert outcomes[0] == (batch[0][0].id, True)
    assert outcomes[1] == (earlier.id, False)  # the existing job, not an error
    assert outcomes[2] == (batch[2][0].id, True)
    assert outcomes[3] == (batch[2][0].id, False)  # lost to a member of the same batch
    # Nothing of the losers was written: no row, no queued event, nothing dispatched.
    assert _counts(engine) == (3, 3)


def test_concurrent_creates_share_transactions_and_each_gets_its_own_row(
    engine: Engine,
) -> None:
    async def main() -> list[tuple[str, bool]]:
        group = GroupCommit(engine.store.jobs)
        news = [_new() for _ in range(60)] + [_new("same"), _new("same")]
        got = await asyncio.gather(*(group.create(n) for n in news))
        assert group.members == 62 and group.batches < 62  # some rows shared a commit
        return [(job.id, created) for job, created in got]

    got = asyncio.run(main())
    assert len({job_id for job_id, _ in got}) == 61
    assert sorted(created for _, created in got).count(False) == 1
    assert _counts(engine) == (61, 61)


def test_an_error_of_the_batch_reaches_every_member(tmp_path: Path) -> None:
    """SQLite's max_page_count makes every commit meet a "full disk" (SQLITE_FULL)."""
    engine = Engine(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'conveyor.db'}")
    try:
        writer = engine.store.db.writer
        with writer.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

        @event.listens_for(writer, "connect")
        def _cap(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

        writer.dispose()

        async def main() -> list[BaseException | tuple[Job, bool]]:
            group = GroupCommit(engine.store.jobs)
            batch = [_new() for _ in range(5)] + [_new(f"k{i}") for i in range(200)]
            return await asyncio.gather(*(group.create(n) for n in batch),
                                        return_exceptions=True)

        results = asyncio.run(main())
        assert all(isinstance(r, InsufficientStorage) for r in results), results[:3]
        assert len({id(r) for r in results}) == len(results)  # each raises its own object
        event.remove(writer, "connect", _cap)
        writer.dispose()
        assert _counts(engine) == (0, 0)
        # Room again: the next batch commits.
        assert engine.store.jobs.create_many([(_new(), None)])[0]
    finally:
        engine.close()


def test_completing_a_job_claims_the_next_in_the_same_transaction(engine: Engine) -> None:
    first_id, second_id = engine.add("noop"), engine.add("noop")
    first = engine.store.attempts.claim_next("w1", 30)
    assert first is not None and first.job.id == first_id
    state, following = engine.store.attempts.complete_and_claim_next(
        first_id, first.token, {"ok": 1}, [], [], "w1", 30)
    assert state is JobState.SUCCEEDED
    if engine.store.db.pg:
        # PostgreSQL claims in its own transaction (an over-limit claim rolls back alone).
        assert following is None
        queued = engine.store.jobs.get(second_id)
        assert queued is not None and queued.state is JobState.QUEUED
        return
    assert following is not None and following.job.id == second_id and following.attempt == 1
    job = engine.store.jobs.get(second_id)
    assert job is not None and job.state is JobState.RUNNING
    assert job.lease_token == following.token
    types = [e.type for e in engine.store.events.after(0, job_id=second_id)]
    assert types == ["job.queued", "job.started"]
    # Nothing left to claim: the job still completes.
    state, none = engine.store.attempts.complete_and_claim_next(
        second_id, following.token, None, [], [], "w1", 30)
    assert state is JobState.SUCCEEDED and none is None


def test_a_lost_lease_claims_nothing(engine: Engine) -> None:
    first_id, second_id = engine.add("noop"), engine.add("noop")
    stale = engine.store.attempts.claim_next("w1", 30)
    assert stale is not None and stale.job.id == first_id
    engine.store.jobs.delete(first_id)  # clears the token: the attempt lost its lease
    with pytest.raises(LeaseLost):
        engine.store.attempts.complete_and_claim_next(
            first_id, stale.token, None, [], [], "w1", 30)
    job = engine.store.jobs.get(second_id)
    assert job is not None and job.state is JobState.QUEUED  # rolled back with the rest
