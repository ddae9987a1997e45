"""Terminal transitions under contention: every job ends exactly once.

Reapers (as run by every ``conveyor serve`` and ``conveyor worker``), the attempt's own worker
finishing or failing, and a user cancelling all race on the same expired leases. The loser of
each race must learn that it lost and write nothing: one terminal event and one webhook message
per job, every round, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.models import JobError, JobState
from conveyor.store import Store
from tests.engine.conftest import Engine

ROUNDS = 150
JOBS_PER_ROUND = 4


def _never(_error: JobError, _attempts: int, _max: int) -> float | None:
    return None


def _race(calls: list[Callable[[], Any]]) -> None:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            call()
        except ConveyorError:
            pass  # LeaseLost, JobConflict: the loser learns that it lost

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()


def test_one_terminal_event_and_one_webhook_per_job_under_racing_writers(engine: Engine) -> None:
    # Separate stores are separate connection pools, as separate processes would have.
    stores = [Store(engine.db_url, run_dir=engine.settings.run_dir,
                    default_webhook_url="http://127.0.0.1:9/hook") for _ in range(4)]
    error = JobError("boom", "failed", retryable=False)
    later = time.time() + 3600  # every lease counts as expired for the reapers
    try:
        job_ids: list[str] = []
        for _round in range(ROUNDS):
            claims = []
            for _ in range(JOBS_PER_ROUND):
                job_id = engine.add("noop")
                claim = stores[0].attempts.claim(job_id, "w", 30)
                assert claim is not None
                claims.append(claim)
                job_ids.append(job_id)
            calls: list[Callable[[], Any]] = [
                lambda s=s: s.maintenance.reap_expired_leases(_never, now=later)
                for s in stores[:3]
            ]
            for i, c in enumerate(claims):
                finisher = stores[3 - i % 2]
                calls.append(lambda c=c, f=finisher: f.attempts.fail(c.job.id, c.token, error,
                                                                      _never))
                calls.append(lambda c=c, f=finisher: f.attempts.complete(c.job.id, c.token, {}))
                calls.append(lambda c=c: stores[1].jobs.request_cancel(c.job.id))
                calls.append(lambda c=c: stores[2].attempts.finish_cancelled(c.job.id, c.token))
            _race(calls)
        for job_id in job_ids:
            job = stores[0].jobs.get(job_id)
            assert job is not None and job.state.terminal, job
            events = stores[0].events.after(0, job_id=job_id)
            terminal = [e.type for e in events if e.type in
                        ("job.succeeded", "job.failed", "job.cancelled")]
            assert terminal == [f"job.{job.state.value}"], (job_id, [e.type for e in events])
            messages = stores[0].outbox.messages(job_id)
            assert [m.event_type for m in messages] == terminal, job_id
    finally:
        for s in stores:
            s.close()


def test_claim_takes_exactly_the_given_job_once(engine: Engine) -> None:
    first, second = engine.add("noop"), engine.add("noop", priority=9)
    claim = engine.store.attempts.claim(first, "w", 30)
    assert claim is not None and claim.job.id == first  # not the more urgent one
    assert engine.store.attempts.claim(first, "w", 30) is None  # a duplicate message
    engine.store.attempts.complete(first, claim.token, {})
    assert engine.store.attempts.claim(first, "w", 30) is None  # finished
    engine.store.jobs.request_cancel(second)
    assert engine.store.attempts.claim(second, "w", 30) is None  # cancelled
    job = engine.store.jobs.get(second)
    assert job is not None and job.state is JobState.CANCELLED
