"""The store on real SQLite and PostgreSQL: claims, fencing, transitions, events, outbox."""

from __future__ import annotations

import time

import pytest

from conveyor.errors import JobConflict, LeaseLost
from conveyor.models import IllegalTransition, JobError, JobState
from conveyor.runner.retry import RetryPolicy
from conveyor.storage import artifact_key, input_key
from conveyor.store import Artifact
from conveyor.store.transitions import move
from tests.engine.conftest import Engine

NEVER = RetryPolicy(0, 0)


def test_claims_by_priority_then_age_and_honours_run_after(engine: Engine) -> None:
    old = engine.add("noop")
    new = engine.add("noop")
    urgent = engine.add("noop", priority=5)
    order = [engine.store.attempts.claim_next("w", 30) for _ in range(3)]
    assert [c.job.id for c in order if c] == [urgent, old, new]
    assert engine.store.attempts.claim_next("w", 30) is None
    # A retry waits for its run_after.
    claim = order[1]
    assert claim is not None
    engine.store.attempts.fail(claim.job.id, claim.token, JobError("x", "boom", True),
                              lambda *_: 60.0)
    assert engine.store.attempts.claim_next("w", 30) is None


def test_each_claim_gets_a_fresh_token_and_counts_an_attempt(engine: Engine) -> None:
    job_id = engine.add("noop")
    first = engine.store.attempts.claim_next("w1", 30)
    assert first is not None and first.attempt == 1
    engine.store.attempts.fail(job_id, first.token, JobError("x", "boom", True), lambda *_: 0.0)
    second = engine.store.attempts.claim_next("w2", 30)
    assert second is not None and second.attempt == 2
    assert second.token != first.token


def test_stale_attempt_cannot_change_the_job(engine: Engine) -> None:
    job_id = engine.add("noop", max_attempts=3)
    stale = engine.store.attempts.claim_next("w1", 0.01)
    assert stale is not None
    time.sleep(0.05)
    assert engine.store.maintenance.reap_expired_leases(RetryPolicy(0, 0)) == 1
    fresh = engine.store.attempts.claim_next("w2", 30)
    assert fresh is not None and fresh.job.id == job_id
    art = Artifact(job_id, "a.txt", "text/plain", 1, "0" * 64, artifact_key("x", "y", "a.txt"))
    with pytest.raises(LeaseLost):
        engine.store.attempts.complete(job_id, stale.token, {"from": "stale"}, [art])
    with pytest.raises(LeaseLost):
        engine.store.attempts.fail(job_id, stale.token, JobError("x", "late", False), NEVER)
    with pytest.raises(LeaseLost):
        engine.store.attempts.set_progress(job_id, stale.token, 0.5, "late")
    assert not engine.store.attempts.heartbeat(job_id, stale.token, 30).alive
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.lease_token == fresh.token
    engine.store.attempts.complete(job_id, fresh.token, {"from": "fresh"})
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.result == {"from": "fresh"} and job.artifacts == []


def test_poison_job_ends_failed_after_max_attempts(engine: Engine) -> None:
    job_id = engine.add("noop", max_attempts=2)
    policy = RetryPolicy(0, 0)
    for expected in (JobState.QUEUED, JobState.FAILED):
        claim = engine.store.attempts.claim_next("w", 30)
        assert claim is not None
        state = engine.store.attempts.fail(job_id, claim.token,
                                          JobError("worker_lost", "gone", True), policy)
        assert state is expected
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.error is not None and job.error.code == "worker_lost"


def test_non_retryable_error_fails_at_once(engine: Engine) -> None:
    job_id = engine.add("noop", max_attempts=5)
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    state = engine.store.attempts.fail(job_id, claim.token, JobError("corrupt_file", "bad", False),
                                      RetryPolicy(0, 0))
    assert state is JobState.FAILED


def test_illegal_transitions_are_refused(engine: Engine) -> None:
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    engine.store.attempts.complete(job_id, claim.token, {})
    with pytest.raises(JobConflict):
        engine.store.jobs.request_cancel(job_id)
    with pytest.raises(JobConflict):
        engine.store.jobs.retry(job_id)
    with pytest.raises(IllegalTransition):
        with engine.store.db.tx() as tx:  # the pure table guards even the store's own helpers
            move(tx, job_id, [JobState.SUCCEEDED], JobState.RUNNING, {})


def test_user_retry_requeues_failed_job_with_fresh_attempts(engine: Engine) -> None:
    job_id = engine.add("noop", max_attempts=1)
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    engine.store.attempts.fail(job_id, claim.token, JobError("x", "no", False), NEVER)
    engine.store.jobs.retry(job_id)
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert job.error is None


def test_events_have_increasing_ids_for_every_transition(engine: Engine) -> None:
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    engine.store.attempts.set_progress(job_id, claim.token, 0.5, "half")
    engine.store.attempts.complete(job_id, claim.token, {"ok": True})
    events = engine.store.events.after(0, job_id=job_id)
    assert [e.type for e in events] == ["job.queued", "job.started", "job.progress",
                                        "job.succeeded"]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert engine.store.events.last_id() == ids[-1]


def test_terminal_state_writes_outbox_message_in_same_transaction(engine: Engine) -> None:
    engine.store.db.default_webhook_url = "http://127.0.0.1:9/hook"
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    assert engine.store.outbox.messages(job_id) == []
    engine.store.attempts.complete(job_id, claim.token, {"ok": True})
    (message,) = engine.store.outbox.messages(job_id)
    assert message.event_type == "job.succeeded" and message.state == "pending"


def test_cancel_of_running_job_wins_over_late_success(engine: Engine) -> None:
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    assert engine.store.jobs.request_cancel(job_id) is JobState.RUNNING
    assert engine.store.attempts.heartbeat(job_id, claim.token, 30).cancel_requested
    engine.store.attempts.complete(job_id, claim.token, {"ok": True})
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state is JobState.CANCELLED and job.result is None


def test_delete_tombstones_and_fences_running_attempt(engine: Engine) -> None:
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    keys = engine.store.jobs.delete(job_id)
    assert keys == [input_key(job_id)]
    with pytest.raises(LeaseLost):
        engine.store.attempts.complete(job_id, claim.token, {})
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.deleted_at is not None


def test_migrations_are_idempotent(engine: Engine) -> None:
    engine.store.migrate()
    engine.store.migrate()
    assert engine.store.jobs.count_by_state() == {}


def test_purge_history_drops_events_but_keeps_the_tombstone(engine: Engine) -> None:
    job_id = engine.add("noop")
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None
    engine.store.attempts.complete(job_id, claim.token, {})
    engine.store.jobs.delete(job_id)
    engine.store.maintenance.purge_history(job_id)
    assert engine.store.events.after(0, job_id=job_id) == []
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.deleted_at is not None
