"""How an attempt's exception ends the job, through real worker processes (classify + worker)."""

from __future__ import annotations

from tests.engine.conftest import Engine


def test_bad_artifact_name_fails_once_without_retries(engine: Engine) -> None:
    job_id = engine.add("badname", max_attempts=3)
    engine.burst(workers=1)
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state.value == "failed"
    assert job.error is not None and job.error.code == "bad_artifact_name"
    assert job.error.retryable is False
    assert job.attempts == 1  # a programming error is not retried max_attempts times


def test_unexpected_crash_is_retried_with_a_short_message(engine: Engine) -> None:
    job_id = engine.add("crash", max_attempts=2)
    engine.burst(workers=1)
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state.value == "failed"
    assert job.attempts == 2
    assert job.error is not None and job.error.code == "processor_error"
    assert job.error.message == "RuntimeError: boom in file.bin"
    # ...while the log has the whole traceback.
    assert "Traceback" in engine.logs() and "second line" in engine.logs()
